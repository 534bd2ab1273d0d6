//! Chapter 7's job on a published crate: `value1`, `value2` and `array`
//! in a segment of the `shared_memory` crate, which a forked child opens
//! by its name and changes.
//!
//!     cargo run -p shared_memory_demo --example shared_memory_crate
//!
//! The crate gives bytes, not values: no type, no lock. Here the parent
//! and the child never touch the bytes at the same time (the parent
//! waits for the child to end), which is the promise each `unsafe` block
//! makes; to share them while both run, add a lock (chapter 8's example
//! puts raw_sync's mutex in the segment).

use std::path::Path;

use bytemuck::{Pod, Zeroable};
use mpcore::Process;
use shared_memory::{Shmem, ShmemConf};

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Data {
    value1: i32,
    _pad: u32,
    value2: f64,
    array: [i32; 4],
}

/// The segment's bytes as `Data`.
///
/// # Safety
///
/// No other process may use the bytes while the reference lives.
unsafe fn data(shmem: &mut Shmem) -> &mut Data {
    // SAFETY: the segment is page-aligned and `size_of::<Data>()` long;
    // `Data` is plain bytes; the caller promises nobody else uses them.
    unsafe { &mut *shmem.as_ptr().cast::<Data>() }
}

fn show(when: &str, d: &Data) {
    println!(
        "{when}: value1 = {}, value2 = {}, array = {:?}",
        d.value1, d.value2, d.array
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut shmem = ShmemConf::new().size(size_of::<Data>()).create()?;
    let name = shmem.get_os_id().to_owned();
    let file = format!("/dev/shm{name}");
    // SAFETY: no child exists yet.
    let d = unsafe { data(&mut shmem) };
    *d = Data {
        value1: 0,
        _pad: 0,
        // The tutorial's 3.14 is a number to store, not π.
        #[allow(clippy::approx_constant)]
        value2: 3.14,
        array: [1, 2, 3, 4],
    };
    show("before the child", d);

    let mut child = Process::spawn({
        let name = name.clone();
        move || -> Result<(), String> {
            let mut shmem = ShmemConf::new()
                .os_id(&name)
                .open()
                .map_err(|e| e.to_string())?;
            // SAFETY: the parent does not touch the bytes until we end.
            let d = unsafe { data(&mut shmem) };
            d.value1 += 1;
            d.value2 *= 2.0;
            d.array.iter_mut().for_each(|x| *x *= *x);
            Ok(())
        }
    })?;
    child.join()??;
    // SAFETY: the child has ended.
    show("after the child ", unsafe { data(&mut shmem) });

    println!("in use: {} exists: {}", file, Path::new(&file).exists());
    drop(shmem);
    println!(
        "dropped by its creator: {} exists: {}",
        file,
        Path::new(&file).exists()
    );
    Ok(())
}
