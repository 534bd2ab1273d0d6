//! Scenarios that need a process of their own, run by mpcore's integration
//! tests with a deadline (`tests/common/mod.rs`, `run_helper`).
//!
//! - `orphan`: spawns a child that sleeps, prints `child-pid N`, then sleeps
//!   itself until the test kills it with SIGKILL.
//! - `log`: logs one line from the main thread and one from a child process
//!   with `mpcore::logging`, on stderr.
//! - `shm normal|panic|killed`: makes one of each shared object (`Value`,
//!   `Array`, `Lock`, `Event`), uses them from a child, checks that none is
//!   under `/dev/shm`, then ends normally, panics, or (for `killed`) holds
//!   the locks, starts a child waiting on an event, prints `ready PID` and
//!   sleeps until the test kills it.
//! - `print-storm N`: one thread prints in a tight loop while the main
//!   thread spawns and joins N processes that print; prints `joined N`.
//! - `buffered`: with this one thread only, prints half a line, spawns a
//!   child that prints without a newline, joins it, ends the line: the
//!   output must hold each piece once, in order.

use std::io::Write;
use std::thread;
use std::time::Duration;

use mpcore::{Array, Event, Lock, Process, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("orphan") => orphan(),
        Some("log") => log_lines(),
        Some("shm") => shared_objects(args.get(1).map(String::as_str)),
        Some("print-storm") => print_storm(args.get(1).map_or(Ok(200), |n| n.parse())?),
        Some("buffered") => buffered(),
        other => Err(format!("unknown scenario {other:?}").into()),
    }
}

fn buffered() -> Result<(), Box<dyn std::error::Error>> {
    for i in 0..3 {
        print!("parent-{i} ");
        Process::spawn(move || print!("child-{i} "))?.join()?;
    }
    println!("parent-end");
    Ok(())
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

fn shared_objects(ending: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let v = Value::new(0i32)?;
    let a = Array::new(&[1.0f64, 2.0])?;
    let lock = Lock::new()?;
    let e = Event::new()?;
    let mut child = Process::spawn({
        let (v, a, lock, e) = (v.clone(), a.clone(), lock.clone(), e.clone());
        move || {
            let _held = lock.acquire().is_ok();
            let wrote = v.set(1).is_ok() && a.set(1, 3.0).is_ok();
            e.set();
            wrote
        }
    })?;
    if !(child.join()? && e.is_set() && v.get()? == 1 && a.to_vec()? == [1.0, 3.0]) {
        return Err("the child's changes did not reach the parent".into());
    }
    // Named shared memory would show here as a mapping or an open file.
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    if let Some(line) = maps.lines().find(|l| l.contains("/dev/shm")) {
        return Err(format!("a mapping under /dev/shm: {line}").into());
    }
    match ending {
        Some("normal") => Ok(()),
        Some("panic") => panic!("panicked on purpose, holding every kind of shared object"),
        Some("killed") => {
            e.clear();
            let _held = lock.acquire()?;
            let _value_held = v.lock()?;
            // The child waits for an event nobody sets; it dies with us.
            let child = Process::spawn({
                let e = e.clone();
                move || e.wait().is_ok()
            })?;
            println!("ready {}", child.pid());
            std::io::stdout().flush()?;
            thread::sleep(Duration::from_secs(120));
            Err("the test should have killed this process".into())
        }
        other => Err(format!("unknown ending {other:?}").into()),
    }
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
