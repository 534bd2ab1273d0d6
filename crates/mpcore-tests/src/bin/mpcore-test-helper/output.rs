//! Printing from children and threads at once: nothing lost, doubled or
//! hung on a lock another thread holds.

use std::io::Write;
use std::thread;

use mpcore::Process;

pub(crate) fn buffered() -> Result<(), Box<dyn std::error::Error>> {
    for i in 0..3 {
        print!("parent-{i} ");
        Process::spawn(move || print!("child-{i} "))?.join()?;
    }
    println!("parent-end");
    Ok(())
}

pub(crate) fn print_storm(n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let printer = thread::spawn(|| {
        for i in 0u64.. {
            println!("printer line {i}");
            eprintln!("printer error line {i}");
        }
    });
    for i in 0..n {
        let mut p = Process::spawn(move || {
            println!("child {i} says hello");
            eprintln!("child {i} says hello on stderr");
            i
        })?;
        let got = p.join()?;
        if got != i {
            return Err(format!("child {i} returned {got}").into());
        }
    }
    // The printer never ends; leaving with exit() takes it down.
    drop(printer);
    println!("joined {n}");
    std::io::stdout().flush()?;
    std::process::exit(0)
}

pub(crate) fn stdout_held() -> Result<(), Box<dyn std::error::Error>> {
    let retiring = mpcore::pool::Builder::new()
        .processes(1)
        .max_tasks_per_child(1)
        .build()?;
    let mut out = std::io::stdout().lock();
    match mpcore::Pool::new(2) {
        Err(e @ mpcore::Error::StreamLocked { .. }) => writeln!(out, "pool-new: {e}")?,
        other => writeln!(out, "pool-new: unexpected {other:?}")?,
    }
    let from_thread = thread::spawn(|| match Process::spawn(|| 1u8) {
        Err(e @ mpcore::Error::StreamLocked { .. }) => format!("{e}"),
        other => format!("unexpected {:?}", other.map(|mut p| p.join())),
    })
    .join()
    .map_err(|_| "the spawning thread panicked")?;
    writeln!(out, "spawn-from-thread: {from_thread}")?;
    let results: Vec<_> = retiring.imap(|x: u32| x * 2, 0..4)?.collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    writeln!(out, "imap: {} results, {ok} ok", results.len())?;
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        writeln!(out, "imap error: {e}")?;
    }
    drop(out);
    let pool = mpcore::Pool::new(2)?;
    println!("released: {:?}", pool.map(|x: u32| x + 1, 0..3)?);
    Ok(())
}
