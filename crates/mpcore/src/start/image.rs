//! What the dynamic loader's images say about this process, for a task
//! that travels to a fresh run of the program:
//!
//! - the table of task entries: every function that mpcore registered as
//!   one ([`register_entry!`]), the only ones a fresh run may be sent to
//!   ([`is_entry`]);
//! - the code of mpcore's own image, where a task's function must lie
//!   ([`in_mpcore_code`]).

use std::ffi::{c_int, c_void};

/// Registers `$entry` (a function path, generics included) as a task
/// entry: a record of its address goes into the `mpcore_entries` section,
/// which the linker gathers from every object into one table, bounded by
/// `__start_mpcore_entries` and `__stop_mpcore_entries`. Put it in the
/// entry's own body, so that every instantiation that is compiled at all
/// registers itself. It emits no instruction: the record is data.
macro_rules! register_entry {
    ($entry:path) => {
        // SAFETY: the assembly only adds a record to a data section (its
        // `.pushsection` and `.popsection` leave the code where it was):
        // no instruction runs, no register, flag or memory is touched.
        unsafe {
            ::core::arch::asm!(
                ".pushsection mpcore_entries,\"awR\",%progbits",
                ".balign {align}",
                ".dc.a {entry}",
                ".popsection",
                align = const ::core::mem::size_of::<usize>(),
                entry = sym $entry,
                options(nomem, nostack, preserves_flags),
            )
        }
    };
}
pub(crate) use register_entry;

unsafe extern "C" {
    /// Made by the linker: where the `mpcore_entries` section begins and
    /// ends. The record of [`is_entry`] itself makes sure the section
    /// exists wherever the code that reads it is linked.
    static __start_mpcore_entries: [usize; 0];
    static __stop_mpcore_entries: [usize; 0];
}

/// Whether `address` is a task entry that mpcore registered in this
/// program ([`register_entry!`]): the start of one, not any other code.
pub(crate) fn is_entry(address: usize) -> bool {
    // The one record that is always there, with the code that reads the
    // table: a program that never sends a task still has the section, so
    // the linker defines its bounds. It names no function (0).
    // SAFETY: as in `register_entry!`: data only, no instruction.
    unsafe {
        std::arch::asm!(
            ".pushsection mpcore_entries,\"awR\",%progbits",
            ".balign {align}",
            ".dc.a 0",
            ".popsection",
            align = const size_of::<usize>(),
            options(nomem, nostack, preserves_flags),
        )
    };
    let start = (&raw const __start_mpcore_entries).expose_provenance();
    let stop = (&raw const __stop_mpcore_entries).expose_provenance();
    address != 0
        && (start..stop).step_by(size_of::<usize>()).any(|record| {
            // SAFETY: between the two bounds the linker put the
            // `mpcore_entries` sections of every object and nothing else:
            // aligned words (records, or the zeros that pad one object's
            // records from the next), relocated by the loader before any
            // code of the program ran, and never written after. The memory
            // is none of Rust's allocations, so it is reached by address.
            let value = unsafe { std::ptr::with_exposed_provenance::<usize>(record).read() };
            value == address
        })
}

/// Whether `address` lies in the executable code of mpcore's own image
/// (the program, or the library that holds mpcore).
pub(crate) fn in_mpcore_code(address: usize) -> bool {
    let here = in_mpcore_code as fn(usize) -> bool as usize;
    let mut found = false;
    walk(|object| {
        if object.segments.iter().any(|s| s.holds(here)) {
            found = object.segments.iter().any(|s| s.code && s.holds(address));
        }
    });
    found
}

/// A loaded segment of an object.
struct Segment {
    start: usize,
    end: usize,
    /// Executable (`PF_X`).
    code: bool,
}

impl Segment {
    fn holds(&self, address: usize) -> bool {
        (self.start..self.end).contains(&address)
    }
}

/// What [`walk`] reads of one object.
struct Loaded {
    segments: Vec<Segment>,
}

#[cfg(target_pointer_width = "64")]
type Phdr = libc::Elf64_Phdr;
#[cfg(target_pointer_width = "32")]
type Phdr = libc::Elf32_Phdr;

/// Calls `visit` with each object of the link map, in the loader's order
/// (the program first), under the loader's lock.
fn walk(mut visit: impl FnMut(Loaded)) {
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: `data` is the `&mut dyn FnMut` passed below, alive for
        // the whole call of `dl_iterate_phdr`; `info` is the loader's,
        // valid during this callback.
        let (visit, info) = unsafe { (&mut *data.cast::<&mut dyn FnMut(Loaded)>(), &*info) };
        // SAFETY: as the loader filled it in: a readable object.
        visit(unsafe { read_object(info) });
        0
    }
    let mut visit: &mut dyn FnMut(Loaded) = &mut visit;
    // SAFETY: `each` matches the callback type, does not unwind (it calls
    // nothing that panics but allocation failures, which abort), and gets
    // `data` back as the pointer given here.
    unsafe { libc::dl_iterate_phdr(Some(each), (&raw mut visit).cast()) };
}

/// Reads an object's loaded segments.
///
/// # Safety
///
/// `info` must be the loader's description of a loaded object, as
/// `dl_iterate_phdr` gives it: its program headers and its loaded
/// segments mapped and readable during the call.
unsafe fn read_object(info: &libc::dl_phdr_info) -> Loaded {
    let base = info.dlpi_addr as usize;
    let headers: &[Phdr] = if info.dlpi_phdr.is_null() {
        &[]
    } else {
        // SAFETY: the loader's table of `dlpi_phnum` program headers.
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) }
    };
    let segments = headers
        .iter()
        .filter(|h| h.p_type == libc::PT_LOAD)
        .map(|h| {
            let start = base.wrapping_add(h.p_vaddr as usize);
            Segment {
                start,
                end: start.wrapping_add(h.p_memsz as usize),
                code: h.p_flags & libc::PF_X != 0,
            }
        })
        .collect();
    Loaded { segments }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpcore_code_is_code_of_this_program() {
        assert!(in_mpcore_code(in_mpcore_code as fn(usize) -> bool as usize));
        // Data is not code; an address of nothing is neither.
        static DATA: u8 = 0;
        assert!(!in_mpcore_code(&raw const DATA as usize));
        assert!(!in_mpcore_code(8));
    }

    fn a_registered_entry() {
        register_entry!(a_registered_entry);
    }

    #[test]
    fn only_registered_entries_are_entries() {
        a_registered_entry();
        let entry = a_registered_entry as fn() as usize;
        assert!(is_entry(entry));
        assert!(!is_entry(entry + 1));
        assert!(!is_entry(0));
        assert!(!is_entry(in_mpcore_code as fn(usize) -> bool as usize));
    }
}
