//! Scenarios of the course crate's tests that need a process of their own,
//! run by `tests/logging.rs` and `tests/floor.rs` with a deadline
//! (`testkit::run`).
//!
//! - `log`: logs one line from the main thread and one from a child process
//!   with `course::logging`, on stderr.
//! - `log-tz-held`: run with `TZ=:FIFO`, where FIFO is a named pipe that no
//!   one writes to. A thread calls `localtime_r`, which takes glibc's
//!   time-zone lock and, under it, blocks opening the zone file. With that
//!   lock held, forks one child that calls `localtime_r` too (it must
//!   hang: the proof that the lock is held) and one that logs a line with
//!   `course::logging` (it must not). Prints what each child did.
//! - `pingpong`: plays `floor::fork_pipe_pingpong` for ever, until the
//!   test kills it.
//! - `as-nobody nproc`: drops root for user `nobody` (the kernel exempts
//!   root from the limit below), then lets a third fork fail under
//!   `RLIMIT_NPROC` inside `floor::shared_atomic_increments` and prints
//!   whether any child of it is left.

use std::thread;
use std::time::{Duration, Instant};

use nix::sys::wait::WaitPidFlag;

use mpcore::Process;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("log") => log_lines(),
        Some("log-tz-held") => log_with_time_zone_lock_held(),
        Some("pingpong") => {
            course::floor::fork_pipe_pingpong(u64::MAX)?;
            Err("the test should have killed this process".into())
        }
        Some("as-nobody") => as_nobody(args.get(1).map(String::as_str)),
        other => Err(format!("unknown scenario {other:?}").into()),
    }
}

fn log_lines() -> Result<(), Box<dyn std::error::Error>> {
    course::logging::init();
    log::info!("from the parent");
    Process::spawn(|| log::warn!("from the child"))?.join()?;
    Ok(())
}

/// Calls glibc's `localtime_r` for the epoch, for what it does on the way:
/// it takes the time-zone lock, and reads the zone file `TZ` names.
fn local_time() {
    let epoch: libc::time_t = 0;
    // SAFETY: an all-zero `tm` is a valid value (integers and a null
    // zone-name pointer), which `localtime_r` overwrites.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals of the right types;
    // `localtime_r` is the reentrant form, which keeps no pointer to them.
    unsafe { libc::localtime_r(&epoch, &mut tm) };
}

fn log_with_time_zone_lock_held() -> Result<(), Box<dyn std::error::Error>> {
    course::logging::init();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        tid_tx.send(course::logging::thread_id()).unwrap();
        // Never returns: opening the FIFO waits for a writer, under the lock.
        local_time();
    });
    let holder = tid_rx.recv()?;
    // Fork only once the holder is inside openat, with the lock taken.
    let syscall = format!("/proc/self/task/{holder}/syscall");
    let in_openat = || {
        std::fs::read_to_string(&syscall)
            .is_ok_and(|s| s.split_whitespace().next() == Some(&libc::SYS_openat.to_string()))
    };
    let start = Instant::now();
    while !in_openat() {
        if start.elapsed() > Duration::from_secs(10) {
            return Err("the holder thread never blocked opening the TZ file".into());
        }
        thread::sleep(Duration::from_millis(5));
    }

    let mut control = Process::spawn(local_time)?;
    match control.join_timeout(Duration::from_secs(1)) {
        Err(mpcore::Error::Timeout(_)) => println!("localtime in a child: still waiting after 1 s"),
        other => println!("localtime in a child: {other:?}"),
    }
    control.kill()?;
    let _ = control.join();

    let mut logger = Process::spawn(|| log::info!("logged with the time-zone lock held"))?;
    match logger.join_timeout(Duration::from_secs(20)) {
        Ok(()) => println!("logging in a child: returned"),
        Err(e) => {
            println!("logging in a child: {e}");
            logger.kill()?;
        }
    }
    // The holder thread waits for ever; leaving with exit() takes it down.
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
            let result = course::floor::shared_atomic_increments(5, 1 << 24);
            println!("result: {}", error_text(result));
            let left = match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Err(nix::errno::Errno::ECHILD) => "none".to_owned(),
                other => format!("{other:?}"),
            };
            println!("children left: {left}");
            Ok(())
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
