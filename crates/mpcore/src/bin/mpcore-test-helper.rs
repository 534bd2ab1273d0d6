//! Scenarios that need a process of their own, run by mpcore's integration
//! tests with a deadline (`tests/common/mod.rs`, `run_helper`).
//!
//! - `orphan`: spawns a child that sleeps, prints `child-pid N`, then sleeps
//!   itself until the test kills it with SIGKILL.
//! - `log`: logs one line from the main thread and one from a child process
//!   with `mpcore::logging`, on stderr.
//! - `print-storm N`: one thread prints in a tight loop while the main
//!   thread spawns and joins N processes that print; prints `joined N`.

use std::io::Write;
use std::thread;
use std::time::Duration;

use mpcore::Process;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("orphan") => orphan(),
        Some("log") => log_lines(),
        Some("print-storm") => print_storm(args.get(1).map_or(Ok(200), |n| n.parse())?),
        other => Err(format!("unknown scenario {other:?}").into()),
    }
}

fn orphan() -> Result<(), Box<dyn std::error::Error>> {
    let child = Process::spawn(|| thread::sleep(Duration::from_secs(120)))?;
    println!("child-pid {}", child.pid());
    std::io::stdout().flush()?;
    // Sleep on the thread that forked: the child's PR_SET_PDEATHSIG is tied
    // to this thread, and the test kills the whole process meanwhile.
    thread::sleep(Duration::from_secs(120));
    Err("the test should have killed this process".into())
}

fn log_lines() -> Result<(), Box<dyn std::error::Error>> {
    mpcore::logging::init();
    log::info!("from the parent");
    Process::spawn(|| log::warn!("from the child"))?.join()?;
    Ok(())
}

fn print_storm(n: usize) -> Result<(), Box<dyn std::error::Error>> {
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
