//! A full descriptor table: large results that need a descriptor, and a
//! pool whose replacement worker cannot be forked for a while.

use std::thread;
use std::time::Duration;

use mpcore::{Pool, Process};

/// More than a message carries inline: it travels in a memfd.
const BIG: usize = 1 << 20;

fn big(fill: u8) -> Vec<u8> {
    vec![fill; BIG]
}

fn small(x: u32) -> u32 {
    x + 1
}

/// Opens `/dev/null` until the descriptor table is full; the files free
/// their slots when dropped. The limit is lowered first, so that this
/// takes a few hundred files, not a million.
fn fill_descriptor_table() -> Result<Vec<std::fs::File>, Box<dyn std::error::Error>> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, 256.min(hard), hard)?;
    let mut files = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(file) => files.push(file),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => return Ok(files),
            Err(e) => return Err(e.into()),
        }
    }
}

pub(crate) fn no_free_descriptor() -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::new(2)?;
    let pids = pool.pids();
    let mut child = Process::spawn(|| big(7))?;
    let queue = mpcore::Queue::new()?;
    queue.put(big(3))?;
    let files = fill_descriptor_table()?;
    println!("process: {}", error_text(child.join()));
    println!("process again: {}", error_text(child.join()));
    println!("pool: {}", error_text(pool.apply(big, 1)));
    println!("queue: {:?}", queue.get().map(|item| item == big(3)));
    drop(files);
    println!("process after: {}", child.join()? == big(7));
    println!("pool after: {}", pool.apply(big, 2)? == big(2));
    println!("same workers: {}", pool.pids() == pids);
    Ok(())
}

pub(crate) fn fork_retry() -> Result<(), Box<dyn std::error::Error>> {
    let pool = mpcore::pool::Builder::new()
        .processes(1)
        .max_tasks_per_child(1)
        .build()?;
    let files = fill_descriptor_table()?;
    let first = pool.apply_async(small, 1)?;
    let second = pool.apply_async(small, 2)?;
    thread::sleep(Duration::from_millis(300));
    drop(files);
    println!("first: {:?}", first.get());
    println!("second: {:?}", second.get());
    Ok(())
}

/// The error's text, or what came instead of an error.
fn error_text<T>(result: mpcore::Result<T>) -> String {
    match result {
        Ok(_) => "no error".to_owned(),
        Err(e) => e.to_string(),
    }
}
