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
//! - `no-free-fd`: fills its descriptor table, then takes a 1 MiB result
//!   from a `Process` (twice) and from a `Pool` task, printing each error;
//!   frees the table, takes both again, and prints whether the pool kept
//!   its workers.
//! - `fork-retry`: a pool whose one worker retires after each task, run
//!   with a full descriptor table, so that the replacement's fork fails
//!   until the table is freed 300 ms later; prints both tasks' results.

use std::io::Write;
use std::thread;
use std::time::Duration;

use mpcore::{Array, Event, Lock, Pool, Process, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("orphan") => orphan(),
        Some("log") => log_lines(),
        Some("shm") => shared_objects(args.get(1).map(String::as_str)),
        Some("print-storm") => print_storm(args.get(1).map_or(Ok(200), |n| n.parse())?),
        Some("buffered") => buffered(),
        Some("no-free-fd") => no_free_descriptor(),
        Some("fork-retry") => fork_retry(),
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
    let mut child = Process::spawn(|| {
        let _held = lock.acquire().is_ok();
        let wrote = v.set(1).is_ok() && a.set(1, 3.0).is_ok();
        e.set();
        wrote
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
            let child = Process::spawn(|| e.wait().is_ok())?;
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

fn no_free_descriptor() -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::new(2)?;
    let pids = pool.pids();
    let mut child = Process::spawn(|| big(7))?;
    let files = fill_descriptor_table()?;
    println!("process: {}", error_text(child.join()));
    println!("process again: {}", error_text(child.join()));
    println!("pool: {}", error_text(pool.apply(big, 1)));
    drop(files);
    println!("process after: {}", child.join()? == big(7));
    println!("pool after: {}", pool.apply(big, 2)? == big(2));
    println!("same workers: {}", pool.pids() == pids);
    Ok(())
}

fn fork_retry() -> Result<(), Box<dyn std::error::Error>> {
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
