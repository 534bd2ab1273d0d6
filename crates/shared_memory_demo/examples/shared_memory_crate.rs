//! Chapter 7's job on a published crate: `value1`, `value2` and `array`
//! in a segment of the `shared_memory` crate, which a forked child opens
//! by its name and changes.
//!
//!     cargo run -p shared_memory_demo --example shared_memory_crate
//!
//! The crate gives bytes, not values: no type, no lock, and reading them
//! while another process writes them is a data race, which Rust leaves
//! undefined. `course::published::SharedAtomics` puts atomics in the
//! segment instead (an `AtomicF64` is an `f64`'s bits in an `AtomicU64`),
//! so every access is whole even while both processes run. Each update
//! here is still a load and then a store: two processes that changed the
//! same value at once would lose one change. Here the parent waits for
//! the child to end; to share the values while both change them, add a
//! lock (chapter 8's example puts raw_sync's mutex in a segment).

use std::path::Path;
use std::sync::atomic::AtomicI32;
use std::sync::atomic::Ordering::Relaxed;

use course::published::{AtomicF64, SharedAtomics};
use mpcore::Process;

/// `value1`, `value2` and `array`.
type Data = (AtomicI32, AtomicF64, [AtomicI32; 4]);

fn show(when: &str, (value1, value2, array): &Data) {
    let array = array.each_ref().map(|x| x.load(Relaxed));
    println!(
        "{when}: value1 = {}, value2 = {}, array = {array:?}",
        value1.load(Relaxed),
        value2.load(Relaxed),
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = SharedAtomics::<Data>::create()?;
    let name = data.os_id().to_owned();
    let file = format!("/dev/shm{name}");
    let (value1, value2, array) = &*data;
    value1.store(0, Relaxed);
    // The tutorial's 3.14 is a number to store, not π.
    #[allow(clippy::approx_constant)]
    value2.store(3.14, Relaxed);
    for (x, v) in array.iter().zip([1, 2, 3, 4]) {
        x.store(v, Relaxed);
    }
    show("before the child", &data);

    let mut child = Process::spawn({
        let name = name.clone();
        move || -> Result<(), String> {
            let data = SharedAtomics::<Data>::open(&name).map_err(|e| e.to_string())?;
            let (value1, value2, array) = &*data;
            value1.fetch_add(1, Relaxed);
            value2.store(value2.load(Relaxed) * 2.0, Relaxed);
            for x in array {
                x.store(x.load(Relaxed).pow(2), Relaxed);
            }
            Ok(())
        }
    })?;
    // `join` also orders the child's stores before the reads below.
    child.join()??;
    show("after the child ", &data);

    println!("in use: {} exists: {}", file, Path::new(&file).exists());
    drop(data);
    println!(
        "dropped by its creator: {} exists: {}",
        file,
        Path::new(&file).exists()
    );
    Ok(())
}
