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
//!   from a `Process` (twice), from a `Pool` task and from a `Queue`,
//!   printing each error;
//!   frees the table, takes both again, and prints whether the pool kept
//!   its workers.
//! - `fork-retry`: a pool whose one worker retires after each task, run
//!   with a full descriptor table, so that the replacement's fork fails
//!   until the table is freed 300 ms later; prints both tasks' results.
//! - `pingpong`: plays `floor::fork_pipe_pingpong` for ever, until the
//!   test kills it.
//! - `as-nobody nproc|in-flight`: drops root for user `nobody` (the
//!   kernel exempts root from the limits below), then either lets a third
//!   fork fail under `RLIMIT_NPROC` inside `floor::shared_atomic_increments`
//!   and prints whether any child of it is left, or keeps putting 64 KiB
//!   items on a `Queue` nobody reads under an open-file limit of 32, and
//!   prints the error that stops it.

use std::io::Write;
use std::thread;
use std::time::Duration;

use nix::sys::wait::WaitPidFlag;

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
        Some("pingpong") => {
            mpcore::floor::fork_pipe_pingpong(u64::MAX)?;
            Err("the test should have killed this process".into())
        }
        Some("as-nobody") => as_nobody(args.get(1).map(String::as_str)),
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
    let queue = mpcore::Queue::new()?;
    queue.put(big(3))?;
    let files = fill_descriptor_table()?;
    println!("process: {}", error_text(child.join()));
    println!("process again: {}", error_text(child.join()));
    println!("pool: {}", error_text(pool.apply(big, 1)));
    println!("queue: {}", error_text(queue.get()));
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

/// The user the `as-nobody` scenarios run as.
const NOBODY: u32 = 65534;

fn as_nobody(what: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    use nix::sys::resource::{Resource, setrlimit};
    use nix::unistd::{Uid, setuid};
    if Uid::effective().is_root() {
        setuid(Uid::from_raw(NOBODY))?;
    }
    match what {
        Some("nproc") => {
            // Room for this process, whatever else runs as this user, and
            // two children: the third fork fails.
            let running = processes_of(Uid::current().as_raw())?;
            setrlimit(Resource::RLIMIT_NPROC, running + 2, running + 2)?;
            let result = mpcore::floor::shared_atomic_increments(5, 1 << 24);
            println!("result: {}", error_text(result));
            let left = match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Err(nix::errno::Errno::ECHILD) => "none".to_owned(),
                other => format!("{other:?}"),
            };
            println!("children left: {left}");
            Ok(())
        }
        Some("in-flight") => {
            setrlimit(Resource::RLIMIT_NOFILE, 32, 32)?;
            let queue = mpcore::Queue::new()?;
            for i in 0..1000 {
                if let Err(e) = queue.put(vec![0u8; 64 * 1024]) {
                    println!("put {i}: {e}");
                    return Ok(());
                }
            }
            Err("1000 large items in flight, and no error".into())
        }
        other => Err(format!("unknown as-nobody scenario {other:?}").into()),
    }
}

/// How many processes user `uid` runs, by its real id.
fn processes_of(uid: u32) -> Result<u64, Box<dyn std::error::Error>> {
    let mut count = 0;
    for entry in std::fs::read_dir("/proc")? {
        let path = entry?.path();
        let Ok(status) = std::fs::read_to_string(path.join("status")) else {
            continue;
        };
        let real = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next()?.parse::<u32>().ok());
        if real == Some(uid) {
            count += 1;
        }
    }
    Ok(count)
}
