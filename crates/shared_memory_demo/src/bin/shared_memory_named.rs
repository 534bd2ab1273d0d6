//! Two programs, started separately, share one segment by its name:
//! Python's `multiprocessing.shared_memory.SharedMemory`, as
//! `mpcore::SharedMemory`.
//!
//! ```python
//! from multiprocessing import shared_memory
//! shm = shared_memory.SharedMemory(name="demo", create=True, size=32)  # writer
//! shm = shared_memory.SharedMemory(name="demo")                        # reader
//! ```
//!
//! In one terminal, the writer creates the segment, fills it and waits
//! (at most a minute) for a reader to change it:
//!
//!     cargo run -p shared_memory_demo --bin shared_memory_named -- write demo
//!
//! In another, the reader opens it by name, prints it and changes it:
//!
//!     cargo run -p shared_memory_demo --bin shared_memory_named -- read demo
//!
//! The writer then prints what the reader left and exits; the last of the
//! two to go takes the name out of `/dev/shm` with it.

use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use mpcore::SharedMemory;

/// What the segment holds: the chapter's `value1`, `value2` and `array`,
/// laid out as C would (no padding, no pointers), plus how many readers
/// have been by.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Shared {
    value1: i32,
    readers: u32,
    value2: f64,
    array: [i32; 4],
}

fn show(who: &str, s: &Shared) {
    println!(
        "{who}: value1 = {}, value2 = {}, array = {:?}",
        s.value1, s.value2, s.array
    );
}

fn write(name: &str, wait: Duration) -> Result<(), Box<dyn std::error::Error>> {
    let shm = SharedMemory::create(name, size_of::<Shared>())?;
    shm.lock()?.view_mut::<Shared>()?[0] = Shared {
        value1: 0,
        readers: 0,
        // The tutorial's 3.14 is a number to store, not π.
        #[allow(clippy::approx_constant)]
        value2: 3.14,
        array: [1, 2, 3, 4],
    };
    println!(
        "writer: created /dev/shm/{} ({} bytes)",
        shm.name(),
        shm.size()
    );
    show("writer", &shm.lock()?.view::<Shared>()?[0]);
    println!("writer: waiting for a reader");
    // Ask for the output now: a test (or a pipe) reads it while we wait.
    std::io::Write::flush(&mut std::io::stdout())?;
    let start = Instant::now();
    loop {
        {
            let guard = shm.lock()?;
            let s = guard.view::<Shared>()?[0];
            if s.readers > 0 {
                show("writer", &s);
                return Ok(());
            }
        }
        if start.elapsed() > wait {
            return Err(format!("no reader opened {name:?} within {wait:?}").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let shm = SharedMemory::open(name)?;
    let mut guard = shm.lock()?;
    let s = &mut guard.view_mut::<Shared>()?[0];
    show("reader", s);
    // The chapter's child's work: add 1, double, square each item.
    s.value1 += 1;
    s.value2 *= 2.0;
    s.array.iter_mut().for_each(|x| *x *= *x);
    s.readers += 1;
    show("reader", s);
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: shared_memory_named write NAME [SECONDS] | read NAME";
    let name = args.get(1).ok_or(usage)?;
    match args.first().map(String::as_str).unwrap_or_default() {
        "write" => {
            let seconds = args.get(2).map_or(Ok(60), |s| s.parse())?;
            write(name, Duration::from_secs(seconds))
        }
        "read" => read(name),
        _ => Err(usage.into()),
    }
}
