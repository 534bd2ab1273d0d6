//! What watches one child's end ([`Watch`], shared by its [`Process`]
//! handle and by this process's list of its children), and that list:
//! Python's `active_children()`.
//!
//! A child is reaped once, by whichever asks first: its handle (`join`,
//! `is_alive`, a drop) or [`active_children`]. The status goes into the
//! watch, under its lock, so that the other learns it there instead of
//! finding the child gone (`ECHILD`) and its status lost.
//!
//! [`Process`]: super::Process

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use nix::errno::Errno;
use nix::unistd::{Pid, getpid};

use super::current::ProcessInfo;
use crate::base::{Error, ExitStatus, Result, StartMethod};
use crate::os::poll;
use crate::os::wait::{self, Which};
use crate::start::forkserver::{self, Report};

/// How a child was found to have ended.
#[derive(Debug, Clone, Copy)]
pub(super) enum Ended {
    /// Reaped, with this status.
    Status(ExitStatus),
    /// Reaped by something else (the kernel, with `SIGCHLD` ignored; a
    /// `waitpid(-1)` elsewhere): how it ended is lost.
    Elsewhere,
    /// The fork server that started it died first.
    ServerLost,
}

/// What watches one child: its pid, the descriptor that says it has
/// ended, and how it ended once someone found out.
pub(super) struct Watch {
    pub(super) pid: Pid,
    /// Set by [`Builder::name`](super::Builder::name), or `Process-{number}`
    /// on first use.
    name: OnceLock<String>,
    number: usize,
    daemon: bool,
    method: StartMethod,
    pub(super) pidfd: Option<OwnedFd>,
    /// For a child of the fork server: where the server reports how the
    /// child ended, since only the server can `waitpid` for it.
    pub(super) reports: Option<OwnedFd>,
    ended: Mutex<Option<Ended>>,
}

impl Watch {
    pub(super) fn new(
        pid: Pid,
        (number, name): (usize, OnceLock<String>),
        daemon: bool,
        method: StartMethod,
        pidfd: Option<OwnedFd>,
        reports: Option<OwnedFd>,
    ) -> Arc<Watch> {
        let watch = Arc::new(Watch {
            pid,
            name,
            number,
            daemon,
            method,
            pidfd,
            reports,
            ended: Mutex::new(None),
        });
        register(&watch);
        watch
    }

    pub(super) fn name(&self) -> &str {
        self.name.get_or_init(|| format!("Process-{}", self.number))
    }

    pub(super) fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// The lock on how the child ended; held by a caller that must know
    /// it has not been reaped meanwhile (a signal sent by pid).
    pub(super) fn lock(&self) -> MutexGuard<'_, Option<Ended>> {
        self.ended.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What becomes readable when the child has ended: the fork server's
    /// report socket for its children (readable once the status is there
    /// to read), the pidfd for our own.
    pub(super) fn exit_fd(&self) -> Option<BorrowedFd<'_>> {
        self.reports
            .as_ref()
            .or(self.pidfd.as_ref())
            .map(|fd| fd.as_fd())
    }

    /// How the child ended, if it has, asked without waiting: `waitpid`
    /// with `WNOHANG` on this child only, or the fork server's report.
    pub(super) fn try_reap(&self) -> Result<Option<Ended>> {
        let mut ended = self.lock();
        if ended.is_none() {
            *ended = self.reap_now()?;
        }
        Ok(*ended)
    }

    fn reap_now(&self) -> Result<Option<Ended>> {
        if let Some(reports) = &self.reports {
            return Ok(match forkserver::read_report(reports.as_fd(), false)? {
                Report::Ended(status) => Some(Ended::Status(status)),
                Report::NotYet => None,
                Report::ServerGone => Some(Ended::ServerLost),
            });
        }
        match wait::ended(Which::Pid(self.pid), libc::WNOHANG) {
            Ok(found) => Ok(found.map(|(_, status)| Ended::Status(status))),
            // It was our child, not yet reaped by us (nor by
            // `active_children`, which would have said so under the
            // lock): someone else reaped it.
            Err(Errno::ECHILD) => Ok(Some(Ended::Elsewhere)),
            Err(e) => Err(Error::os("waitid", e)),
        }
    }

    /// Waits until the child has ended, and says how. The waiting itself
    /// holds no lock (`waitid` with `WNOWAIT`, which leaves the child to
    /// be reaped, or a `poll` of the report socket); the reaping does.
    pub(super) fn wait_reaped(&self) -> Result<Ended> {
        loop {
            if let Some(ended) = self.try_reap()? {
                return Ok(ended);
            }
            match &self.reports {
                Some(reports) => {
                    poll::readable([reports.as_fd()], None)?;
                }
                None => {
                    match wait::ended(Which::Pid(self.pid), libc::WNOWAIT) {
                        // ECHILD: reaped meanwhile, by `active_children`
                        // (its status is in the watch) or by another.
                        Ok(_) | Err(Errno::ECHILD) => {}
                        Err(e) => return Err(Error::os("waitid", e)),
                    }
                }
            }
        }
    }

    /// Whether the child has ended, for [`active_children`]: reaping one of
    /// ours, but only looking at a fork server child's report socket, not
    /// reading it (the handle, or a pool, reads it).
    fn has_ended(&self) -> bool {
        let mut ended = self.lock();
        if ended.is_some() {
            return true;
        }
        if let Some(reports) = &self.reports {
            return poll::readable_now(&[reports.as_fd()]).map_or(true, |r| r == [true]);
        }
        match self.reap_now() {
            Ok(found) => {
                *ended = found;
                found.is_some()
            }
            Err(_) => true,
        }
    }

    fn info(&self) -> ProcessInfo {
        ProcessInfo::new(
            self.name().to_owned(),
            self.pid.as_raw(),
            self.daemon,
            Some(self.method),
        )
    }
}

/// The children this process started: the processes whose handles are
/// alive, and which this process owns (a forked child starts with an
/// empty list, not a copy of its parent's).
pub(crate) struct Children {
    owner: i32,
    list: Vec<Weak<Watch>>,
    /// The length at which the list is next swept of dropped handles.
    sweep_at: usize,
}

static CHILDREN: Mutex<Children> = Mutex::new(Children {
    owner: 0,
    list: Vec::new(),
    sweep_at: 64,
});

/// The list, emptied first if it was inherited from the parent by a fork.
fn children() -> MutexGuard<'static, Children> {
    let mut children = hold_across_fork();
    let me = getpid().as_raw();
    if children.owner != me {
        children.owner = me;
        // The parent's children are not ours. Forget, not drop: the
        // watches are the parent's, and so is freeing them.
        std::mem::forget(std::mem::take(&mut children.list));
        children.sweep_at = 64;
    }
    children
}

/// The list's lock, held across a fork so that no other thread holds it
/// at the instant of the copy (the child could never take it).
pub(crate) fn hold_across_fork() -> MutexGuard<'static, Children> {
    CHILDREN.lock().unwrap_or_else(PoisonError::into_inner)
}

fn register(watch: &Arc<Watch>) {
    let mut children = children();
    if children.list.len() >= children.sweep_at {
        children.list.retain(|child| child.strong_count() > 0);
        children.sweep_at = (children.list.len() * 2).max(64);
    }
    children.list.push(Arc::downgrade(watch));
}

/// The children of this process that are still running (Python's
/// `mp.active_children()`), in the order they were started. Like Python,
/// it reaps those that have ended: their handles'
/// [`exitcode`](super::Process::exitcode) then says how, and their
/// [`join`](super::Process::join) still returns what they sent.
///
/// A child counts while its [`Process`](super::Process) handle lives
/// (a dropped handle has joined or killed its child); the workers of a
/// [`Pool`](crate::Pool) are children too. A child of the fork server is
/// the server's to reap: it counts until the server has reported its end.
///
/// ```
/// use mpcore::{Process, active_children};
///
/// let mut p = Process::spawn(|| std::thread::sleep(std::time::Duration::from_millis(300)))?;
/// let running = active_children();
/// assert!(running.iter().any(|child| child.pid() == p.pid()));
/// p.join()?;
/// assert!(active_children().iter().all(|child| child.pid() != p.pid()));
/// # Ok::<(), mpcore::Error>(())
/// ```
pub fn active_children() -> Vec<ProcessInfo> {
    let mut children = children();
    let mut running = Vec::new();
    children.list.retain(|child| {
        let Some(watch) = child.upgrade() else {
            return false;
        };
        if watch.has_ended() {
            return false;
        }
        running.push(watch.info());
        true
    });
    running
}
