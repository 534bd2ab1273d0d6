//! The program's record of its fork servers: the one that serves it now,
//! those that retired when the program's credentials changed, and the
//! threads that reap each one when it ends.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, send, setsockopt, sockopt};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::{Gid, Pid, Uid, getgroups, getpid, getresgid, getresuid};

use super::{RETIRE, SERVER_ENV};
use crate::base::{Error, Result};
use crate::start::exec::exec_self;
use crate::wire::channel;

/// The fork servers of one process.
pub(crate) struct Servers {
    /// The process they belong to: a process forked later holds a copy
    /// of this, whose servers are its parent's, and starts its own.
    owner: Option<Pid>,
    /// The server that takes this process's requests.
    current: Option<Server>,
    /// Servers started with credentials the program has since given up:
    /// they fork no more, and end when their last child has. Their
    /// request sockets stay open, so that they still die with the
    /// program.
    retired: Vec<Server>,
}

/// One server, once started.
struct Server {
    pid: Pid,
    requests: OwnedFd,
    /// The program's credentials when it started the server, which are
    /// the server's own, and so every child's.
    credentials: Credentials,
    /// A thread of ours waits for its end and reaps it ([`watch`]).
    /// Without one (it could not be started), each request looks.
    watched: bool,
}

static SERVERS: Mutex<Servers> = Mutex::new(Servers {
    owner: None,
    current: None,
    retired: Vec::new(),
});

/// What a server's children get from the program: its real and effective
/// user and group, and its supplementary groups.
#[derive(PartialEq, Eq)]
struct Credentials {
    uid: (Uid, Uid),
    gid: (Gid, Gid),
    groups: Vec<Gid>,
}

impl Credentials {
    fn now() -> Result<Credentials> {
        let uid = getresuid().map_err(|e| Error::os("getresuid", e))?;
        let gid = getresgid().map_err(|e| Error::os("getresgid", e))?;
        let mut groups = getgroups().map_err(|e| Error::os("getgroups", e))?;
        groups.sort_unstable_by_key(|g| g.as_raw());
        groups.dedup();
        Ok(Credentials {
            uid: (uid.real, uid.effective),
            gid: (gid.real, gid.effective),
            groups,
        })
    }
}

/// The servers' lock, held by the thread that forks across the fork, so
/// that no other thread holds it at that instant: a lock copied held would
/// stay held for ever in the child.
pub(crate) fn hold_across_fork() -> MutexGuard<'static, Servers> {
    SERVERS.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Servers {
    /// This process's servers; copies inherited from a parent are closed
    /// (those servers are the parent's, to keep or to lose).
    fn mine(&mut self) -> &mut Servers {
        let me = getpid();
        if self.owner != Some(me) {
            self.current = None;
            self.retired.clear();
            self.owner = Some(me);
        }
        self
    }
}

/// The pid of the server that forks for the program as it is now, and a
/// copy of its request socket. A server is started now if there is none,
/// if the last one has died, or if the program's credentials have changed
/// since it started (the old one retires).
pub(super) fn server_socket() -> Result<(Pid, OwnedFd)> {
    let mut servers = hold_across_fork();
    let servers = servers.mine();
    // Servers that no thread of ours watches are looked at (and reaped
    // if they have ended) here.
    servers
        .retired
        .retain(|server| server.watched || still_running(server.pid));
    if servers
        .current
        .as_ref()
        .is_some_and(|server| !server.watched && !still_running(server.pid))
    {
        servers.current = None;
    }
    let credentials = Credentials::now()?;
    if let Some(old) = servers
        .current
        .take_if(|server| server.credentials != credentials)
    {
        // Not a child more with the old credentials. If it is gone
        // already, it is reaped all the same.
        let _ = send(
            old.requests.as_raw_fd(),
            &[RETIRE],
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        );
        servers.retired.push(old);
    }
    let server = match &mut servers.current {
        Some(server) => server,
        None => servers.current.insert(launch(credentials)?),
    };
    // A copy, so that the request is sent without holding the lock.
    let requests = server
        .requests
        .try_clone()
        .map_err(|e| Error::os("dup", Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
    Ok((server.pid, requests))
}

/// A server whose sockets have closed is on its way out: forget it, and
/// reap it if no thread of ours does.
pub(super) fn forget(pid: Pid) {
    let mut servers = hold_across_fork();
    let servers = servers.mine();
    if let Some(server) = servers.current.take_if(|server| server.pid == pid) {
        if !server.watched {
            // It has closed its descriptors: its exit is a moment away.
            while let Err(Errno::EINTR) = waitpid(pid, None) {}
        }
    }
}

/// Whether a server that no thread watches still runs; if it has ended,
/// it is reaped here.
fn still_running(pid: Pid) -> bool {
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return true,
            Err(Errno::EINTR) => continue,
            // Ended (and now reaped), or reaped by the kernel already
            // (`SIGCHLD` ignored).
            _ => return false,
        }
    }
}

/// Starts a server: a fresh run of this program, with the program's
/// credentials of now, holding the other end of a socket that only this
/// process holds.
fn launch(credentials: Credentials) -> Result<Server> {
    // A program whose ids differ (a secure execution for its fresh run)
    // is refused by `exec_self`, which says why.
    let (ours, theirs) = channel::pair()?;
    // Every request carries its sender's credentials, from the first on:
    // the server asks for them too, but only once it runs, and the first
    // request may be sent before.
    setsockopt(&ours, sockopt::PassCred, &true).map_err(|e| Error::os("setsockopt", e))?;
    let program = getpid();
    // No death signal: it would follow the thread that starts the server,
    // not this program; the server watches its socket instead.
    let value = format!("{} {program}", theirs.as_raw_fd());
    let pid = exec_self(SERVER_ENV, &value, theirs, false)?;
    let watched = watch(pid);
    Ok(Server {
        pid,
        requests: ours,
        credentials,
        watched,
    })
}

/// Starts a thread that waits for the server `pid` to end, forgets it and
/// reaps it at once, so that a killed server is no zombie until the next
/// request. `false` if the thread cannot be started (no memory, a thread
/// limit): then each request looks instead.
///
/// The thread waits without reaping (`WNOWAIT`) and reaps under the
/// servers' lock: until then the pid is the server's, and no request
/// takes it for another process.
fn watch(pid: Pid) -> bool {
    std::thread::Builder::new()
        .name("mpcore-forkserver-reaper".to_owned())
        .spawn(move || {
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
            while let Err(Errno::EINTR) = waitid(Id::Pid(pid), flags) {}
            let mut servers = hold_across_fork();
            // (This thread runs in the process that started the server:
            // a fork copies no thread.)
            servers.current.take_if(|server| server.pid == pid);
            servers.retired.retain(|server| server.pid != pid);
            // Without waiting: if something else reaped it first (a
            // `waitpid(-1)` of the program's, or the kernel, with
            // `SIGCHLD` ignored), its pid may already name another child.
            while let Err(Errno::EINTR) = waitpid(pid, Some(WaitPidFlag::WNOHANG)) {}
            drop(servers);
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credentials_of_now_equal_themselves() {
        assert!(Credentials::now().unwrap() == Credentials::now().unwrap());
    }

    #[test]
    fn a_copy_inherited_from_another_process_is_not_ours() {
        let mut servers = Servers {
            owner: Some(Pid::from_raw(1)),
            current: None,
            retired: Vec::new(),
        };
        assert_eq!(servers.mine().owner, Some(getpid()));
    }
}
