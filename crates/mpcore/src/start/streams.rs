//! The std streams' locks around a fork made while other threads run.
//!
//! A fork copies every lock as it is at that instant; a stdout lock that
//! another thread held then stays held for ever in the child, which hangs
//! at its first `println!`. So a fork made while other threads exist takes
//! stdout's and stderr's locks first, and holds them across the fork.
//!
//! std offers no `try_lock` for its streams, and a plain `lock()` could
//! wait for ever: the holder may be waiting for this very fork (a thread
//! that holds `stdout().lock()` while it calls `Pool::new`, whose thread
//! forks the workers). So a thread of mpcore's takes and releases both
//! locks first (the *probe*), and the forking thread waits for it only
//! [`STREAM_LOCK_WAIT`]. Once the probe got them they were free a moment
//! ago, and a print holds them for microseconds: the `lock()` that follows
//! waits no longer than that.
//!
//! The probe is one thread that lasts as long as the process, started on
//! the first fork that needs it. (It was a new thread for each fork: a
//! thread's start and end, and its stack's mapping, made every fork from
//! a process with threads three to five times slower than from one
//! without; chapter 12 says how it was measured.) If it is still waiting when
//! a fork gives up, it takes and releases the locks whenever their holder
//! lets go, and answers the next fork then.

use std::io;
use std::mem;
use std::sync::mpsc::{self, Sender, SyncSender};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::unistd::{Pid, getpid};

use crate::base::{Error, Result};

/// How long a fork waits for another thread to let go of stdout and
/// stderr: far longer than any print takes, far shorter than a hang.
const STREAM_LOCK_WAIT: Duration = Duration::from_millis(500);

/// A request to the probe: where to say that it had both locks.
type Request = SyncSender<()>;

/// The probe of this process, and the process it belongs to: a forked
/// child holds a copy of this with its parent's pid, and starts its own.
static PROBE: Mutex<Option<(Pid, Sender<Request>)>> = Mutex::new(None);

/// The probe's lock, held by the thread that forks across the fork, so
/// that no other thread holds it at that instant: a lock copied held would
/// stay held for ever in the child.
pub(crate) fn hold_across_fork() -> MutexGuard<'static, Option<(Pid, Sender<Request>)>> {
    PROBE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes the stdout and stderr locks, unless they stay held for
/// [`STREAM_LOCK_WAIT`]: then [`Error::StreamLocked`].
pub(crate) fn lock_std_streams() -> Result<(io::StdoutLock<'static>, io::StderrLock<'static>)> {
    let (free, freed) = mpsc::sync_channel(1);
    // Without a probe (no memory or threads left to start one), take the
    // locks and wait as long as it takes, rather than fail the fork.
    if let Some(probe) = probe() {
        if probe.send(free).is_ok() && freed.recv_timeout(STREAM_LOCK_WAIT).is_err() {
            return Err(Error::StreamLocked {
                waited: STREAM_LOCK_WAIT,
            });
        }
    }
    Ok((io::stdout().lock(), io::stderr().lock()))
}

/// A sender to this process's probe, started now if there is none yet;
/// `None` if it cannot be started.
fn probe() -> Option<Sender<Request>> {
    let mut slot = hold_across_fork();
    let me = getpid();
    match slot.take() {
        Some((owner, sender)) if owner == me => {
            let copy = sender.clone();
            *slot = Some((owner, sender));
            return Some(copy);
        }
        // A copy inherited from the parent: its thread was not copied.
        // Forgotten, not dropped: the channel's insides are as the
        // parent's threads left them at the fork, and are not ours to
        // touch.
        Some(inherited) => mem::forget(inherited),
        None => {}
    }
    let (sender, requests) = mpsc::channel::<Request>();
    std::thread::Builder::new()
        .name("mpcore-stdio-probe".to_owned())
        .spawn(move || {
            for free in requests {
                drop((io::stdout().lock(), io::stderr().lock()));
                // The fork that asked may have given up: nobody to tell.
                let _ = free.send(());
            }
        })
        .ok()?;
    *slot = Some((me, sender.clone()));
    Some(sender)
}
