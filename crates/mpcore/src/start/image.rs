//! What the dynamic loader's images say about this process, for a task
//! that travels to a fresh run of the program:
//!
//! - the table of task entries: every function that mpcore registered as
//!   one ([`register_entry!`]), the only ones a fresh run may be sent to
//!   ([`is_entry`]);
//! - the code of mpcore's own image, where a task's function must lie
//!   ([`in_mpcore_code`]);
//! - whether a fresh run of the program reaches mpcore's hook before
//!   `main` at all ([`unable_to_rerun`]): only if mpcore's image is the
//!   program or a library the program loads at start-up, not one loaded
//!   later with `dlopen`, and only if `/proc/self/exe` is the program and
//!   not the dynamic loader that was asked to run it.

use std::ffi::{CStr, c_int, c_void};
use std::sync::OnceLock;

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

/// Why a fresh run of this program would not reach mpcore's hook before
/// `main`, if it would not: a sentence for the error. Worked out once (the
/// loaded images and the way the program was started do not change).
pub(crate) fn unable_to_rerun() -> Option<&'static str> {
    static WHY: OnceLock<Option<&'static str>> = OnceLock::new();
    *WHY.get_or_init(|| {
        let here = unable_to_rerun as fn() -> Option<&'static str> as usize;
        let mut objects = Vec::new();
        let mut main_is_dynamic = false;
        walk(|object| {
            if objects.is_empty() {
                main_is_dynamic = object.interpreter;
            }
            objects.push(Object {
                holds: object.segments.iter().any(|s| s.holds(here)),
                name: object.name,
                soname: object.soname,
                needed: object.needed,
            });
        });
        // SAFETY: `getauxval` reads the auxiliary vector; any type is
        // accepted (an absent one gives 0).
        let loader_base = unsafe { libc::getauxval(libc::AT_BASE) };
        if main_is_dynamic && loader_base == 0 {
            // A dynamically linked program that the kernel started without
            // an interpreter: the interpreter was the program the kernel
            // ran (`ld.so PROGRAM`), and it is what /proc/self/exe names.
            return Some(STARTED_BY_LOADER);
        }
        let preloaded = preloaded();
        let preloaded: Vec<&[u8]> = preloaded.iter().map(Vec::as_slice).collect();
        (!loaded_at_start(&objects, &preloaded)).then_some(LOADED_LATER)
    })
}

const STARTED_BY_LOADER: &str = "StartMethod::Spawn and ForkServer start a fresh run of the \
     program through /proc/self/exe, but this program was started through the dynamic loader \
     (`ld.so PROGRAM`), so /proc/self/exe names the loader, not the program: start the program \
     directly, or use StartMethod::Fork";

const LOADED_LATER: &str = "StartMethod::Spawn and ForkServer start a fresh run of the program \
     (/proc/self/exe), but mpcore is in a shared library that the program did not load at \
     start-up (it was loaded with dlopen, as a plugin or a Python extension is): the fresh run \
     would run the program's own main again, not the task. Use StartMethod::Fork, or link the \
     library into the program so that it is loaded at start-up";

/// One object of the link map, as [`loaded_at_start`] needs it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Object {
    /// Its name as the loader has it: `""` for the program, else the path
    /// (or the name) it was loaded by.
    pub(crate) name: Vec<u8>,
    /// Its own name (`DT_SONAME`), if it has one.
    pub(crate) soname: Option<Vec<u8>>,
    /// The names of the libraries it needs (`DT_NEEDED`).
    pub(crate) needed: Vec<Vec<u8>>,
    /// Whether it is the image that holds mpcore.
    pub(crate) holds: bool,
}

impl Object {
    /// Whether the loader, asked for a library by `wanted` (a `DT_NEEDED`
    /// or preload entry), finds this object: by path if the name has a
    /// slash, else by its `DT_SONAME` or its file name.
    fn answers_to(&self, wanted: &[u8]) -> bool {
        if wanted.contains(&b'/') {
            return self.name == wanted;
        }
        let file_name = self.name.rsplit(|&b| b == b'/').next().unwrap_or(&[]);
        self.soname.as_deref() == Some(wanted) || file_name == wanted
    }
}

/// Whether the object that holds mpcore (`holds`) is loaded when the
/// program starts, before any code of it runs: the program itself (the
/// first object of the link map), a library preloaded (`preload`:
/// `LD_PRELOAD` and `/etc/ld.so.preload`), or one that these need, and
/// those need in turn (`DT_NEEDED`). A library loaded later with `dlopen`
/// is none of them. Each name is taken by the first object in the link
/// map that answers to it, as the loader resolves it: the objects loaded
/// at start-up come first.
pub(crate) fn loaded_at_start(objects: &[Object], preload: &[&[u8]]) -> bool {
    let Some(target) = objects.iter().position(|o| o.holds) else {
        return false;
    };
    let mut reached = vec![false; objects.len()];
    reached[0] = true;
    let mut pending = vec![0];
    let reach = |wanted: &[u8], reached: &mut Vec<bool>, pending: &mut Vec<usize>| match objects
        .iter()
        .position(|o| o.answers_to(wanted))
    {
        Some(i) if !reached[i] => {
            reached[i] = true;
            pending.push(i);
        }
        _ => {}
    };
    for wanted in preload {
        reach(wanted, &mut reached, &mut pending);
    }
    while let Some(i) = pending.pop() {
        for wanted in &objects[i].needed {
            reach(wanted, &mut reached, &mut pending);
        }
    }
    reached[target]
}

/// The libraries preloaded into every program: `LD_PRELOAD` (separated by
/// spaces or colons) and `/etc/ld.so.preload` (by white space).
fn preloaded() -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let mut names = Vec::new();
    if let Some(value) = std::env::var_os("LD_PRELOAD") {
        names.extend(
            value
                .as_bytes()
                .split(|&b| b == b' ' || b == b':')
                .filter(|name| !name.is_empty())
                .map(<[u8]>::to_vec),
        );
    }
    if let Ok(file) = std::fs::read("/etc/ld.so.preload") {
        names.extend(
            file.split(u8::is_ascii_whitespace)
                .filter(|name| !name.is_empty())
                .map(<[u8]>::to_vec),
        );
    }
    names
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

    fn holds_range(&self, start: usize, len: usize) -> bool {
        start >= self.start && start.checked_add(len).is_some_and(|end| end <= self.end)
    }
}

/// What [`walk`] reads of one object.
struct Loaded {
    name: Vec<u8>,
    segments: Vec<Segment>,
    soname: Option<Vec<u8>>,
    needed: Vec<Vec<u8>>,
    /// It has a `PT_INTERP` segment: a dynamically linked program.
    interpreter: bool,
}

#[cfg(target_pointer_width = "64")]
type Phdr = libc::Elf64_Phdr;
#[cfg(target_pointer_width = "32")]
type Phdr = libc::Elf32_Phdr;

/// An entry of a dynamic section (`ElfN_Dyn`): a tag and a value.
#[repr(C)]
struct Dyn {
    tag: isize,
    value: usize,
}

const DT_NULL: isize = 0;
const DT_NEEDED: isize = 1;
const DT_STRTAB: isize = 5;
const DT_STRSZ: isize = 10;
const DT_SONAME: isize = 14;

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

/// Reads an object's segments and dynamic section.
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
    let name = if info.dlpi_name.is_null() {
        Vec::new()
    } else {
        // SAFETY: the loader's name of the object, a C string.
        unsafe { CStr::from_ptr(info.dlpi_name) }
            .to_bytes()
            .to_vec()
    };
    let segments: Vec<Segment> = headers
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
    let mut object = Loaded {
        name,
        segments,
        soname: None,
        needed: Vec::new(),
        interpreter: headers.iter().any(|h| h.p_type == libc::PT_INTERP),
    };
    let Some(dynamic) = headers.iter().find(|h| h.p_type == libc::PT_DYNAMIC) else {
        return object;
    };
    let start = base.wrapping_add(dynamic.p_vaddr as usize);
    let count = dynamic.p_memsz as usize / size_of::<Dyn>();
    let loaded =
        |start: usize, len: usize| object.segments.iter().any(|s| s.holds_range(start, len));
    if start % align_of::<Dyn>() != 0 || !loaded(start, count * size_of::<Dyn>()) {
        return object;
    }
    // SAFETY: the dynamic section lies, aligned, in a loaded segment
    // (checked just above).
    let entries = unsafe { std::slice::from_raw_parts(start as *const Dyn, count) };
    let entries = entries.iter().take_while(|e| e.tag != DT_NULL);
    let (mut strtab, mut strsz, mut soname, mut needed) = (None, 0, None, Vec::new());
    for entry in entries {
        match entry.tag {
            DT_STRTAB => strtab = Some(entry.value),
            DT_STRSZ => strsz = entry.value,
            DT_SONAME => soname = Some(entry.value),
            DT_NEEDED => needed.push(entry.value),
            _ => {}
        }
    }
    // Some loaders relocate the table's address in place, others leave
    // it relative to the base: take the one that lies in the object.
    let Some(strtab) = strtab.and_then(|at| {
        [at, base.wrapping_add(at)]
            .into_iter()
            .find(|&table| loaded(table, strsz))
    }) else {
        return object;
    };
    // SAFETY: the string table lies in a loaded segment (checked just
    // above), `strsz` bytes long.
    let table = unsafe { std::slice::from_raw_parts(strtab as *const u8, strsz) };
    let string = |offset: usize| {
        let bytes = table.get(offset..)?;
        let end = bytes.iter().position(|&b| b == 0)?;
        Some(bytes[..end].to_vec())
    };
    object.soname = soname.and_then(string);
    object.needed = needed.into_iter().filter_map(string).collect();
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str, soname: Option<&str>, needed: &[&str]) -> Object {
        Object {
            name: name.as_bytes().to_vec(),
            soname: soname.map(|s| s.as_bytes().to_vec()),
            needed: needed.iter().map(|n| n.as_bytes().to_vec()).collect(),
            holds: false,
        }
    }

    /// A program that needs libc and libplugin-host (which needs
    /// libmpcore_host.so), then a plugin loaded with dlopen.
    fn link_map() -> Vec<Object> {
        vec![
            object("", None, &["libhost.so", "libc.so.6"]),
            object("linux-vdso.so.1", Some("linux-vdso.so.1"), &[]),
            object("/opt/app/libhost.so", None, &["libdeep.so.1"]),
            object(
                "/lib/libc.so.6",
                Some("libc.so.6"),
                &["ld-linux-x86-64.so.2"],
            ),
            object("/opt/app/libdeep.so.1.2", Some("libdeep.so.1"), &[]),
            object(
                "/lib64/ld-linux-x86-64.so.2",
                Some("ld-linux-x86-64.so.2"),
                &[],
            ),
            object("/usr/lib/python3/ext.so", None, &["libc.so.6"]),
            object("./libpreloaded.so", None, &[]),
        ]
    }

    fn holding(i: usize) -> Vec<Object> {
        let mut objects = link_map();
        objects[i].holds = true;
        objects
    }

    #[test]
    fn the_program_and_what_it_needs_are_loaded_at_start() {
        assert!(loaded_at_start(&holding(0), &[]));
        // Needed by name (no SONAME), and in turn by SONAME.
        assert!(loaded_at_start(&holding(2), &[]));
        assert!(loaded_at_start(&holding(4), &[]));
        assert!(loaded_at_start(&holding(5), &[]));
    }

    #[test]
    fn a_library_loaded_with_dlopen_is_not() {
        assert!(!loaded_at_start(&holding(6), &[]));
        assert!(!loaded_at_start(&holding(7), &[]));
        // No object holds mpcore (cannot happen): not at start either.
        assert!(!loaded_at_start(&link_map(), &[]));
        assert!(!loaded_at_start(&[], &[]));
    }

    #[test]
    fn a_preloaded_library_is_loaded_at_start() {
        assert!(loaded_at_start(&holding(7), &[b"./libpreloaded.so"]));
        // By name, as LD_PRELOAD may give it.
        let mut objects = holding(7);
        objects[7].name = b"/usr/lib/libpreloaded.so".to_vec();
        assert!(loaded_at_start(&objects, &[b"libpreloaded.so"]));
    }

    #[test]
    fn a_name_goes_to_the_first_object_that_answers_to_it() {
        // A second libhost.so, loaded later with dlopen by its path, is
        // not the one the program needs.
        let mut objects = link_map();
        objects.push(object("/elsewhere/libhost.so", None, &[]));
        let last = objects.len() - 1;
        objects[last].holds = true;
        assert!(!loaded_at_start(&objects, &[]));
    }

    #[test]
    fn this_test_program_holds_mpcore_and_can_run_afresh() {
        assert_eq!(unable_to_rerun(), None);
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
