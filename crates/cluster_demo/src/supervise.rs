//! Runs timely with a deadline, and turns its panics into errors.
//!
//! Timely takes a computation down on purpose when a connection breaks:
//! the thread that reads from (or writes to) a peer's socket panics with
//! "timely communication error: ...", and the panic spreads to the workers
//! as they touch the poisoned queues. A worker parked waiting for data
//! from a dead peer may never wake up, though, and connecting to a peer
//! that never starts is retried for ever. So the workers run on a thread
//! of their own, and the main thread watches: for a result, for the first
//! panic anywhere in the process, and for the deadline. Whichever comes
//! first decides, and returning from `main` ends every other thread.

use std::panic;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use timely::worker::Worker;

use crate::cli::Error;

/// The first panic in this process: the thread's name and the message.
static FIRST_PANIC: OnceLock<(String, String)> = OnceLock::new();

/// Runs `func` on every local worker of `config`, like `timely::execute`,
/// and returns the workers' values in order, or an error after at most
/// `timeout`.
pub fn execute<T, F>(
    config: timely::Config,
    process: usize,
    timeout: Duration,
    func: F,
) -> Result<Vec<T>, Error>
where
    T: Send + 'static,
    F: Fn(&mut Worker) -> T + Send + Sync + 'static,
{
    record_panics();
    // Timely calls `func` only once every connection is made.
    let connected = Arc::new(AtomicBool::new(false));
    let started = Arc::clone(&connected);
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("timely-execute".into())
        .spawn(move || {
            let outcome = timely::execute(config, move |worker| {
                started.store(true, Ordering::SeqCst);
                func(worker)
            })
            .map(|guards| guards.join());
            let _ = tx.send(outcome);
        })?;

    let deadline = Instant::now() + timeout;
    loop {
        if let Some((thread, message)) = FIRST_PANIC.get() {
            return Err(panic_error(process, thread, message));
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(results)) => {
                return results
                    .into_iter()
                    .map(|r| r.map_err(|_| lost_worker(process)))
                    .collect();
            }
            Ok(Err(message)) => return Err(Error::Timely { process, message }),
            // The thread ended without a word: it panicked, and the hook saw it.
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(lost_worker(process)),
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                let why = if connected.load(Ordering::SeqCst) {
                    "the processes connected, but the job did not finish"
                } else {
                    "not every process connected (is each -p from 0 to n-1 running, \
                     with the same -n and hostfile?)"
                };
                return Err(Error::Timeout {
                    process,
                    secs: timeout.as_secs(),
                    why,
                });
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

/// A worker thread failed; the panic hook has its message, if it ran.
fn lost_worker(process: usize) -> Error {
    match FIRST_PANIC.get() {
        Some((thread, message)) => panic_error(process, thread, message),
        None => Error::Panicked {
            process,
            thread: "a worker".into(),
            message: "no message".into(),
        },
    }
}

fn panic_error(process: usize, thread: &str, message: &str) -> Error {
    // Timely names its network threads `timely:recv-N` and `timely:send-N`,
    // where N is the peer process at the other end of the socket.
    match thread
        .strip_prefix("timely:recv-")
        .or(thread.strip_prefix("timely:send-"))
    {
        Some(peer) if message.starts_with("timely communication error") => Error::PeerLost {
            process,
            peer: peer.to_string(),
            message: message.to_string(),
        },
        _ => Error::Panicked {
            process,
            thread: thread.to_string(),
            message: message.to_string(),
        },
    }
}

/// Installs a panic hook that keeps the first panic's message. Only a
/// first panic that is not timely's own communication error is printed as
/// usual (it may be a bug, with a location worth seeing); the error returned
/// from `main` reports a broken connection, and the panics that follow the
/// first are its echoes in other threads.
fn record_panics() {
    let default_hook = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        let thread = thread::current().name().unwrap_or("unnamed").to_string();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let first = FIRST_PANIC.get().is_none();
        let communication = message.starts_with("timely communication error");
        let _ = FIRST_PANIC.set((thread, message));
        if first && !communication {
            default_hook(info);
        }
    }));
}

/// Ends this process with `SIGKILL`, as the kernel's out-of-memory killer
/// would: no unwinding, no goodbye on the sockets.
pub fn kill_myself() -> ! {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    // SIGKILL cannot be caught; this line is never reached.
    std::process::abort()
}
