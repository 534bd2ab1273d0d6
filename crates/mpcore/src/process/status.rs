//! How the parent watches a child: whether it lives, how it ended, the
//! signals it is sent, and the waits that reap it (with a pidfd where the
//! kernel has them). A child of the fork server is reaped by the server,
//! which reports how it ended (the waits read that report instead), and
//! signalled by it, on our behalf.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::getpid;

use super::Process;
use super::registry::Ended;
use crate::base::{Error, ExitStatus, Result, Signal};
use crate::os::{pidfd, poll};
use crate::start::forkserver;
use crate::wire::channel;

impl<T> Process<T> {
    /// The child's process id (Python's `p.pid`).
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// The name given by [`Builder::name`](super::Builder::name), or `Process-N`.
    pub fn name(&self) -> &str {
        self.watch.name()
    }

    /// Whether the handle kills (daemon) or waits for (non-daemon) the child
    /// when dropped unjoined.
    pub fn is_daemon(&self) -> bool {
        self.watch.is_daemon()
    }

    /// Whether the child is still running (Python's `p.is_alive()`). When it
    /// has exited, this reaps it and records its status.
    ///
    /// In a process other than the one that started the child (a fork
    /// holding a copy of the handle), it only looks, through the pidfd:
    /// reaping is the starter's business.
    pub fn is_alive(&mut self) -> bool {
        if !self.is_owner() {
            return match self.exit_watch() {
                Some(watch) => poll::readable_now(&[watch]).is_ok_and(|r| r == [false]),
                None => kill(self.pid, None).is_ok(),
            };
        }
        if !self.has_ended() {
            // An error here means the child is no longer ours to wait for.
            if self.poll_exit().is_err() {
                return false;
            }
        }
        !self.has_ended()
    }

    /// How the child ended, once it has been reaped (by `join`, `is_alive`,
    /// a wait or [`active_children`](super::active_children)); `None`
    /// while it runs.
    ///
    /// Also `None` for good when something other than this handle reaped
    /// the child: with `SIGCHLD` set to `SIG_IGN` (common in daemons) the
    /// kernel reaps children itself and keeps no status, and a
    /// `waitpid(-1)` elsewhere takes it. Then [`is_alive`](Self::is_alive)
    /// says `false`, `exit_status` and [`exitcode`](Self::exitcode) say
    /// `None` (unknown), and [`join`](Self::join) still returns the value
    /// the child sent, or [`Error::ReapedElsewhere`] if it sent none.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        // Also what `active_children` found, when it reaped the child.
        self.status.or_else(|| match *self.watch.lock() {
            Some(Ended::Status(status)) => Some(status),
            _ => None,
        })
    }

    /// Python's `p.exitcode`: `None` while running, the exit code, or minus
    /// the number of the signal that ended it (`-9` after [`kill`](Self::kill)).
    /// `None` too when the status was lost to another reaper (see
    /// [`exit_status`](Self::exit_status)).
    pub fn exitcode(&self) -> Option<i32> {
        self.exit_status().map(ExitStatus::exitcode)
    }

    /// Asks the child to stop with `SIGTERM` (Python's `p.terminate()`).
    /// Does nothing once the child has ended. Follow with `join`.
    ///
    /// A child of the fork server
    /// ([`StartMethod::ForkServer`](crate::StartMethod::ForkServer)) is
    /// signalled by the server, its parent, on our behalf: that needs no
    /// permission over the child (it may run with credentials this
    /// process has since given up), and reaches the child only while the
    /// server has not reaped it. The request is sent, not awaited: follow
    /// with `join`, as always.
    ///
    /// # Errors
    ///
    /// [`Error::NotOwner`] in a process other than the one that started
    /// the child; [`Error::Os`] if the kernel refuses the signal (`EPERM`
    /// for a forked or spawned child that runs with privileges this
    /// process has given up).
    pub fn terminate(&self) -> Result<()> {
        self.check_owner("terminate")?;
        self.signal(Signal::SIGTERM)
    }

    /// Ends the child with `SIGKILL` (Python's `p.kill()`). Does nothing
    /// once the child has ended. Follow with `join`.
    ///
    /// # Errors
    ///
    /// As [`terminate`](Self::terminate).
    pub fn kill(&self) -> Result<()> {
        self.check_owner("kill")?;
        self.signal(Signal::SIGKILL)
    }

    /// Python 3.14's `p.interrupt()`: sends `SIGINT`, as Ctrl-C would.
    /// A child that does not handle it ends as if killed by it
    /// ([`Error::Signaled`] with [`Signal::SIGINT`] from `join`, and an
    /// [`exitcode`](Self::exitcode) of `-2`; Python's child, which turns it
    /// into `KeyboardInterrupt`, exits with code 1 instead). Does nothing
    /// once the child has ended.
    ///
    /// # Errors
    ///
    /// As [`terminate`](Self::terminate).
    pub fn interrupt(&self) -> Result<()> {
        self.check_owner("interrupt")?;
        self.signal(Signal::SIGINT)
    }

    /// Sends `signal` to the child (Python's `os.kill(p.pid, sig)`, but
    /// never to another process that has since been given its pid).
    /// Does nothing once the child has ended.
    ///
    /// # Errors
    ///
    /// As [`terminate`](Self::terminate), and [`Error::InvalidArgument`]
    /// for a number that is no signal of this system.
    pub fn send_signal(&self, signal: Signal) -> Result<()> {
        self.check_owner("send_signal")?;
        if !(1..=libc::SIGRTMAX()).contains(&signal.number()) {
            return Err(Error::InvalidArgument(
                "send_signal: the number is no signal of this system (1 to SIGRTMAX)",
            ));
        }
        self.signal(signal)
    }

    /// Sends `signal` to the child, never to another process that has
    /// since been given its pid.
    pub(super) fn signal(&self, signal: Signal) -> Result<()> {
        if self.has_ended() {
            return Ok(());
        }
        if let Some(reports) = &self.watch.reports {
            // A child of the fork server: the server, its parent, sends
            // the signal. It may always signal its child, even once this
            // program has given up the credentials the child runs with,
            // and it knows whether the child is reaped yet.
            return forkserver::send_signal(reports.as_fd(), signal.number());
        }
        let sent = match &self.watch.pidfd {
            // A pidfd names this very process, never a later one with the
            // same pid: if the child is gone, the kernel says ESRCH.
            Some(pidfd) => pidfd::send_signal(pidfd.as_fd(), signal.number())
                .map_err(|e| ("pidfd_send_signal", e)),
            // Without one, the pid is still our child's (a zombie at worst)
            // until it is reaped, by us, by `active_children` or, if
            // `SIGCHLD` is ignored, by the kernel: look first (without
            // reaping) whether it still is, under the watch's lock, so
            // that `active_children` cannot reap it in between.
            None => {
                let ended = self.watch.lock();
                if ended.is_some() || !self.still_ours() {
                    return Ok(());
                }
                // SAFETY: `kill` takes two numbers and touches no memory.
                let rc = unsafe { libc::kill(self.pid.as_raw(), signal.number()) };
                Errno::result(rc).map(drop).map_err(|e| ("kill", e))
            }
        };
        match sent {
            Ok(()) | Err((_, Errno::ESRCH)) => Ok(()),
            Err((call, e)) => Err(Error::os(call, e)),
        }
    }

    /// Whether the child's pid still names our child, alive or a zombie,
    /// asked without reaping it (`waitid` with `WNOWAIT`).
    pub(super) fn still_ours(&self) -> bool {
        if self.watch.reports.is_some() {
            // The fork server's child, which the server reaps only after
            // reporting it: no report read yet, no reaping yet (but for the
            // instant between the two).
            return !self.has_ended();
        }
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        loop {
            match waitid(Id::Pid(self.pid), flags) {
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => return false,
                _ => return true,
            }
        }
    }

    /// Whether the child has ended and been reaped, by us or by another.
    pub(super) fn has_ended(&self) -> bool {
        self.status.is_some() || self.reaped_elsewhere
    }

    pub(super) fn is_owner(&self) -> bool {
        getpid() == self.owner
    }

    /// [`Error::NotOwner`] in a process that holds a copy of the handle but
    /// did not start the child.
    pub(super) fn check_owner(&self, action: &'static str) -> Result<()> {
        if self.is_owner() {
            Ok(())
        } else {
            Err(Error::NotOwner {
                pid: self.pid.as_raw(),
                owner: self.owner.as_raw(),
                action,
            })
        }
    }

    /// Waits for the child to exit and records its status.
    pub(super) fn wait_exit(&mut self) -> Result<()> {
        let ended = self.watch.wait_reaped()?;
        self.record(ended);
        Ok(())
    }

    /// Records the status if the child has exited, without waiting.
    pub(super) fn poll_exit(&mut self) -> Result<()> {
        if let Some(ended) = self.watch.try_reap()? {
            self.record(ended);
        }
        Ok(())
    }

    /// Takes in how the child ended, found by this handle or by
    /// [`active_children`](super::active_children) (`waitpid` on this
    /// child only, never `waitpid(-1)`, which would reap other code's
    /// children; for a child of the fork server, the server's report).
    fn record(&mut self, ended: Ended) {
        match ended {
            Ended::Status(status) => self.status = Some(status),
            Ended::Elsewhere => self.reaped_elsewhere = true,
            Ended::ServerLost => {
                self.reaped_elsewhere = true;
                self.server_lost = true;
            }
        }
    }

    /// Blocks until the result socket or the child's exit has news, or the
    /// deadline passes ([`Error::Timeout`], its duration filled in by the
    /// caller that knows it).
    pub(super) fn wait_for_event(&self, deadline: Option<Instant>) -> Result<()> {
        // `active_children` may have read its end already: news, and the
        // report socket of a fork server child may have nothing left to
        // wake us.
        if self.watch.lock().is_some() {
            return Ok(());
        }
        // Once the message is in or the socket hung up, the socket stays
        // readable: watching it then would spin.
        let watch_socket = self.outcome.is_none() && !self.hung_up;
        let timed_out = match self.exit_watch() {
            Some(exit) if watch_socket => {
                poll::readable([self.results.as_fd(), exit], deadline)? == [false, false]
            }
            Some(exit) => poll::readable([exit], deadline)? == [false],
            None => {
                // No pidfd: nothing wakes us on exit, so look every few ms.
                let slice = Instant::now() + Duration::from_millis(5);
                let until = deadline.map_or(slice, |d| d.min(slice));
                let news = if watch_socket {
                    poll::readable([self.results.as_fd()], Some(until))? == [true]
                } else {
                    std::thread::sleep(until.saturating_duration_since(Instant::now()));
                    false
                };
                // News that came as the time ran out is still news: a
                // zero timeout must report a result that is there.
                !news && deadline.is_some_and(|d| Instant::now() >= d)
            }
        };
        if timed_out {
            return Err(Error::Timeout(Duration::ZERO));
        }
        Ok(())
    }

    /// Blocks until the child is reaped, draining its result socket
    /// meanwhile so that a child writing a result is never stuck behind us.
    /// Used by `Drop`, which has no use for the value and no way to fail.
    pub(super) fn reap_blocking(&mut self) {
        if !self.reap_until(None) {
            // Polling failed: fall back to a plain blocking wait.
            let _ = self.wait_exit();
        }
    }

    /// [`reap_blocking`](Self::reap_blocking), but only until `deadline`;
    /// whether the child has ended and been reaped. For a pool's worker
    /// that may not end (one this process can no longer signal, after it
    /// gave up its privileges): a drop must not wait for it for ever.
    pub(crate) fn reap_by(&mut self, deadline: Instant) -> bool {
        self.reap_until(Some(deadline));
        self.has_ended()
    }

    /// Drains and reaps until the child has ended or `deadline` passes;
    /// `false` if polling failed.
    fn reap_until(&mut self, deadline: Option<Instant>) -> bool {
        while !self.has_ended() {
            while self.outcome.is_none() && !self.hung_up {
                match channel::try_discard(self.results.as_fd()) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(_) => self.hung_up = true,
                }
            }
            if self.poll_exit().is_err() || self.has_ended() {
                return true;
            }
            match self.wait_for_event(deadline) {
                Ok(()) => {}
                Err(Error::Timeout(_)) => return true,
                Err(_) => return false,
            }
        }
        true
    }
}
