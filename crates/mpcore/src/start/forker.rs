//! Where a fork happens: on a thread that lives as long as the process.
//!
//! A child asks the kernel for `PR_SET_PDEATHSIG`, so that it dies with
//! its parent. But the kernel sends that signal when the *thread* that
//! forked exits, not the process: a child forked by a thread pool's
//! worker, a scoped thread or a tokio blocking thread would be killed as
//! soon as that thread ended, with its parent alive. So a fork asked for
//! by any thread but the main one is made by one thread of mpcore's own,
//! started on first need, that never ends: the child then dies exactly
//! when the process does. (The main thread ends only with the process.)
//!
//! The caller waits for the fork; the job it hands over owns everything
//! it needs (`Send + 'static`), and what comes back is plain data.

use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, MutexGuard, PoisonError};

use nix::unistd::{Pid, getpid, gettid};

use crate::base::{Error, Result, catch};

/// A fork to make, and where to say how it went.
type Job = Box<dyn FnOnce() + Send>;

/// The forking thread of this process, and the process it belongs to: a
/// forked child holds a copy of this with its parent's pid, and starts
/// its own thread when it needs one.
static FORKER: Mutex<Option<(Pid, Sender<Job>)>> = Mutex::new(None);

/// Runs `job` where a fork it makes gives its child a parent thread that
/// lives as long as the process: here, on the main thread, or else on
/// mpcore's forking thread, waiting for it. If that thread cannot be
/// started (no memory, a thread limit), here after all.
///
/// # Errors
///
/// [`Error::Io`] if the job panicked on the forking thread (it does not
/// panic: this is the report of a bug, not a hang or an abort).
pub(crate) fn on_lasting_thread<R: Send + 'static>(
    job: impl FnOnce() -> R + Send + 'static,
) -> Result<R> {
    if gettid() == getpid() {
        return Ok(job());
    }
    let Some(forker) = forker() else {
        return Ok(job());
    };
    let (done, result) = mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        let _ = done.send(job());
    });
    if let Err(mpsc::SendError(job)) = forker.send(job) {
        // The thread is gone: run the job here.
        job();
    }
    result.recv().map_err(|_| Error::Io {
        call: "fork",
        reason: "mpcore's forking thread failed in the middle of a fork".to_owned(),
    })
}

/// The forking thread's lock, held by the thread that forks across the
/// fork, so that no other thread holds it at that instant: a lock copied
/// held would stay held for ever in the child.
pub(crate) fn hold_across_fork() -> MutexGuard<'static, Option<(Pid, Sender<Job>)>> {
    FORKER.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A sender to this process's forking thread, started now if there is
/// none yet; `None` if it cannot be started.
fn forker() -> Option<Sender<Job>> {
    let mut slot = hold_across_fork();
    let me = getpid();
    if let Some((owner, sender)) = slot.as_ref() {
        if *owner == me {
            return Some(sender.clone());
        }
    }
    let (sender, jobs) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("mpcore-forker".to_owned())
        .spawn(move || {
            for job in jobs {
                // A job that panicked drops its reply: its caller gets
                // an error, and the next job still has a thread.
                let _ = catch(job);
            }
        })
        .ok()?;
    *slot = Some((me, sender.clone()));
    Some(sender)
}
