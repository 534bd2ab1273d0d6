//! Chapter 12, "fork, spawn and forkserver": one small program under each
//! of the three start methods, and the two ways a thread of the parent can
//! get in the way of a forked child.
//!
//! 1. A background thread holds a `Mutex` (a `static` the child's task
//!    locks too) while the child starts. Under `fork` the child gets a copy
//!    of that lock, held, and no copy of the thread that holds it: it waits
//!    for ever. The demo gives it one second (`join_timeout`), kills it and
//!    says why. Under `spawn` and `forkserver` the child finishes.
//! 2. A background thread holds the stdout lock while the child starts
//!    and prints. A forked child would hang at its first `println!` in the
//!    same way, so mpcore looks before it forks: it waits half a second for
//!    the lock to come free, then refuses with `Error::StreamLocked` rather
//!    than start a child that cannot print. Under `spawn` and `forkserver`
//!    the child prints, and the parent's thread never knew.
//!
//! The Python it mirrors, whose fork child hangs the same way (and which
//! Python 3.12 warns about: "This process is multi-threaded, use of fork()
//! may lead to deadlocks in the child"):
//!
//! ```python
//! import multiprocessing as mp, threading, time
//!
//! lock = threading.Lock()
//!
//! def task(x):
//!     with lock:
//!         return x + 1
//!
//! def holder():
//!     with lock:
//!         time.sleep(3)
//!
//! if __name__ == "__main__":
//!     for method in ["fork", "spawn", "forkserver"]:
//!         threading.Thread(target=holder).start()
//!         time.sleep(0.1)
//!         p = mp.get_context(method).Process(target=task, args=(41,))
//!         p.start()
//!         p.join(1)
//!         print(method, "still waiting" if p.is_alive() else "finished")
//!         p.kill(); p.join(); time.sleep(3)
//! ```
//!
//! Run it with
//!
//!     cargo run -p start_methods_demo            # all three methods
//!     cargo run -p start_methods_demo -- fork    # or one of them
//!
//! Every line is the same from run to run: no pids and no times.

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use mpcore::{Error, StartMethod, process};

/// The lock both the parent's background thread and the child's task take.
static COUNTER: Mutex<u64> = Mutex::new(41);

/// How long the parent waits for a child that may never finish.
const PATIENCE: Duration = Duration::from_secs(1);

/// The child's task in case 1: read the counter under its lock.
fn read_counter(add: u64) -> u64 {
    let counter = COUNTER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    *counter + add
}

/// The child's task in case 2: print, which takes the child's stdout lock.
fn print_line(x: u64) -> u64 {
    println!("  child: I can print; the parent's thread holds only the parent's stdout lock");
    x * 2
}

/// A background thread that takes a lock with `take`, says so, and keeps
/// it until told to let go. Returns the thread and the sender that lets go.
fn hold<G: 'static>(take: fn() -> G) -> (thread::JoinHandle<()>, mpsc::Sender<()>) {
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let holder = thread::spawn(move || {
        let guard = take();
        held_tx.send(()).expect("the main thread waits for this");
        // Held until the main thread sends, or drops the sender.
        let _ = release_rx.recv();
        drop(guard);
    });
    held_rx.recv().expect("the holder thread took its lock");
    (holder, release_tx)
}

fn lock_counter() -> std::sync::MutexGuard<'static, u64> {
    COUNTER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn lock_stdout() -> io::StdoutLock<'static> {
    io::stdout().lock()
}

/// Why the child could (or could not) do its work, by start method.
fn why(method: StartMethod) -> &'static str {
    match method {
        StartMethod::Fork => {
            "fork copied the lock as it was, held, but not the thread that holds it: \
             no one in the child will ever release it"
        }
        StartMethod::Spawn => {
            "the child is a fresh run of the program (exec): its locks start free, \
             and it has no thread but its own"
        }
        StartMethod::ForkServer => {
            "the child is a fork of the server, which has one thread and took no lock: \
             there was nothing held to copy"
        }
    }
}

/// Case 1: a `Mutex` held by a thread of the parent while the child starts.
fn mutex_case(method: StartMethod) -> Result<(), Error> {
    println!("mutex: a thread of the parent holds COUNTER's lock while the child starts");
    let (holder, release) = hold(lock_counter);
    let outcome = process::Builder::new()
        .start_method(method)
        .spawn_fn(read_counter, 1)
        .and_then(wait_or_kill);
    drop(release);
    holder.join().expect("the holder thread");
    println!("mutex: {}", outcome?);
    println!("mutex: why: {}", why(method));
    Ok(())
}

/// Joins `child` if it finishes within [`PATIENCE`]; kills it otherwise.
/// Says which.
fn wait_or_kill(mut child: mpcore::Process<u64>) -> Result<String, Error> {
    match child.join_timeout(PATIENCE) {
        Ok(value) => Ok(format!("the child returned {value}")),
        Err(e) if e.is_timeout() => {
            child.kill()?;
            let end = match child.join() {
                Err(Error::Signaled { signal, .. }) => format!("killed by {signal}"),
                other => format!("ended with {other:?}"),
            };
            Ok(format!(
                "the child still waited for COUNTER after {PATIENCE:?}: \
                 the parent gave up and killed it ({end})"
            ))
        }
        Err(e) => Err(e),
    }
}

/// Case 2: the stdout lock held by a thread of the parent while the child
/// starts and prints.
fn stdout_case(method: StartMethod) -> Result<(), Error> {
    println!(
        "stdout: a thread of the parent holds the stdout lock while the child starts and prints"
    );
    // Flush now: while the holder has stdout, this thread cannot print.
    io::stdout().flush().ok();
    let (holder, release) = hold(lock_stdout);
    let result = process::Builder::new()
        .start_method(method)
        .spawn_fn(print_line, 21)
        .and_then(|mut child| child.join_timeout(PATIENCE * 10));
    drop(release);
    holder.join().expect("the holder thread");
    match result {
        Ok(value) => {
            println!("stdout: the child returned {value}");
            println!("stdout: why: {}", why(method));
        }
        Err(e @ Error::StreamLocked { .. }) => {
            println!("stdout: mpcore refused to start the child: {e}");
            println!(
                "stdout: why: a child forked now would get the stdout lock held and hang \
                 at its first print; mpcore waited half a second for the lock, then \
                 gave up rather than start it"
            );
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

fn run(method: StartMethod) -> Result<(), Error> {
    println!("== {method} ==");
    mutex_case(method)?;
    stdout_case(method)?;
    Ok(())
}

fn main() -> ExitCode {
    let all = [
        StartMethod::Fork,
        StartMethod::Spawn,
        StartMethod::ForkServer,
    ];
    let methods: Vec<StartMethod> = match std::env::args().nth(1).as_deref() {
        None => all.to_vec(),
        Some(name) => match all.iter().find(|m| m.to_string() == name) {
            Some(&m) => vec![m],
            None => {
                eprintln!(
                    "start_methods_demo: no start method {name:?}; say fork, spawn or forkserver"
                );
                return ExitCode::from(2);
            }
        },
    };
    for method in methods {
        if let Err(e) = run(method) {
            println!("{method}: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
