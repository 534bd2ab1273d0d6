//! Who is running: Python's `current_process()` and `parent_process()`,
//! and [`ProcessInfo`], what they and `active_children()` describe a
//! process by.

use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::{Pid, getpid};

use crate::base::StartMethod;
use crate::os::{pidfd, poll};
use crate::start::identity;

/// A process described: its name, pid, daemon flag and the start method
/// that made it. What [`current_process`] and
/// [`active_children`](crate::active_children) return (Python returns the
/// process objects themselves; a Rust handle has one owner, so these are
/// copies of what it says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    name: String,
    pid: i32,
    daemon: bool,
    start_method: Option<StartMethod>,
}

impl ProcessInfo {
    pub(super) fn new(
        name: String,
        pid: i32,
        daemon: bool,
        start_method: Option<StartMethod>,
    ) -> ProcessInfo {
        ProcessInfo {
            name,
            pid,
            daemon,
            start_method,
        }
    }

    /// Python's `name`: `MainProcess` for the main process, the name the
    /// parent gave a child ([`Builder::name`](super::Builder::name)), or
    /// `Process-N`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Python's `pid`.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Python's `daemon`.
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// How the process was started: `None` for the main process (which
    /// mpcore did not start), the method of its [`Builder`](super::Builder)
    /// for a child. A [`Pool`](crate::Pool)'s workers are children too.
    pub fn start_method(&self) -> Option<StartMethod> {
        self.start_method
    }
}

/// This process (Python's `mp.current_process()`): `MainProcess` in the
/// program, or the child mpcore started, with its name, daemon flag and
/// start method, whichever method started it.
///
/// ```
/// use mpcore::{Process, current_process};
///
/// let me = current_process();
/// assert_eq!(me.name(), "MainProcess");
/// assert_eq!(me.start_method(), None);
///
/// let mut child = mpcore::process::Builder::new()
///     .name("worker")
///     .spawn(|| {
///         let me = current_process();
///         (me.name().to_owned(), me.pid())
///     })?;
/// let (name, pid) = child.join()?;
/// assert_eq!((name.as_str(), pid), ("worker", child.pid()));
/// # Ok::<(), mpcore::Error>(())
/// ```
pub fn current_process() -> ProcessInfo {
    let pid = getpid().as_raw();
    match identity::current() {
        Some(me) => ProcessInfo::new(me.name.clone(), pid, me.daemon, Some(me.method())),
        None => ProcessInfo::new("MainProcess".to_owned(), pid, false, None),
    }
}

/// The process that started this one, as seen from a child (Python's
/// `mp.parent_process()`).
#[derive(Debug)]
pub struct ParentProcess {
    name: String,
    pid: Pid,
    /// Opened when this was made: readable once the parent has exited.
    pidfd: Option<OwnedFd>,
}

impl ParentProcess {
    /// The parent's name (`MainProcess`, or its own name if it is a child
    /// too).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The parent's pid. For a child of the fork server, the program that
    /// asked for it, not the server (Python says the same).
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Whether the parent still runs. A child of mpcore's dies with its
    /// parent (`PR_SET_PDEATHSIG`), so from inside a running child this
    /// is `true` but for the instant of that death; it is the question a
    /// grandchild, or a child that clears its death signal, needs.
    ///
    /// Through a pidfd opened by [`parent_process`]; on kernels without
    /// pidfds, whether a process with that pid exists.
    pub fn is_alive(&self) -> bool {
        match &self.pidfd {
            Some(fd) => poll::readable_now(&[fd.as_fd()]).is_ok_and(|r| r == [false]),
            None => !matches!(kill(self.pid, None), Err(Errno::ESRCH)),
        }
    }
}

/// The process that started this one (Python's `mp.parent_process()`):
/// `None` in the main process, which mpcore did not start.
///
/// ```
/// use mpcore::{Process, parent_process};
///
/// assert!(parent_process().is_none());
/// let me = std::process::id() as i32;
/// let mut child = Process::spawn(move || {
///     let parent = parent_process().expect("a child has a parent");
///     (parent.pid() == me, parent.name().to_owned(), parent.is_alive())
/// })?;
/// assert_eq!(child.join()?, (true, "MainProcess".to_owned(), true));
/// # Ok::<(), mpcore::Error>(())
/// ```
pub fn parent_process() -> Option<ParentProcess> {
    let me = identity::current()?;
    let pid = Pid::from_raw(me.parent_pid);
    Some(ParentProcess {
        name: me.parent_name.clone(),
        pid,
        pidfd: pidfd::open(pid),
    })
}
