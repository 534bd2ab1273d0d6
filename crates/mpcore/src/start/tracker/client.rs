//! The program's side of the tracker: start it, hand it each segment.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{ControlMessage, MsgFlags, recv, sendmsg, setsockopt, sockopt};
use nix::sys::time::TimeVal;
use nix::sys::wait::waitpid;
use nix::unistd::{Pid, getpid};

use super::super::request::privileged;
use super::{CONNECT, READY, TRACK, TRACKER_ENV};
use crate::base::{Error, Result};
use crate::start::exec::exec_self;
use crate::wire::channel;

/// How long the tracker may take to start, or to make room in its socket
/// for one more request: far more than it needs, so only a stopped or
/// stuck tracker makes a call wait this long, and then it fails rather
/// than hang.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// This process's connection to its program's tracker.
pub(crate) struct Link {
    socket: OwnedFd,
    /// The process this connection belongs to: a forked child holds a
    /// copy of its parent's, and asks for one of its own.
    owner: Pid,
    /// The tracker's pid when this process started it, and so reaps it.
    child: Option<Pid>,
}

static LINK: Mutex<Option<Link>> = Mutex::new(None);

/// The tracker's lock, held by the thread that forks across the fork, so
/// that no other thread holds it at that instant: a lock copied held would
/// stay held for ever in the child.
pub(crate) fn hold_across_fork() -> MutexGuard<'static, Option<Link>> {
    LINK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a request could not be made.
enum Refused {
    /// The tracker is gone (killed, say): start another.
    Gone,
    Failed(Error),
}

/// Hands the open segment file `file`, named `name` in `/dev/shm`, to this
/// program's tracker, which is started now if there is none yet. Returns
/// once the file waits in the tracker's socket.
///
/// # Errors
///
/// When no tracker can be started (a process limit, say), or its socket
/// stays full (a stopped tracker).
pub(crate) fn track(file: BorrowedFd<'_>, name: &str) -> Result<()> {
    let mut slot = hold_across_fork();
    // A tracker found dead is replaced once; a second death in a row is
    // not bad luck but something that kills it, and is reported.
    for _ in 0..2 {
        let link = connected(&mut slot)?;
        match ask(link, file, name) {
            Ok(()) => return Ok(()),
            Err(Refused::Gone) => retire(&mut slot),
            Err(Refused::Failed(e)) => return Err(e),
        }
    }
    Err(Error::Io {
        call: "track a shared memory segment",
        reason: "mpcore's tracker process died twice in a row before it took the segment \
                 (is something killing it?)"
            .to_owned(),
    })
}

/// This process's connection, made now if it has none: a connection of
/// its own to the tracker its parent's copy leads to (a forked child), or
/// else a new tracker.
fn connected(slot: &mut Option<Link>) -> Result<&mut Link> {
    let me = getpid();
    let link = match slot.take() {
        Some(link) if link.owner == me => link,
        // A copy inherited from the parent: its tracker serves this child
        // too, on a connection of the child's own. The copy is closed
        // (dropped) here; the parent keeps its own.
        Some(inherited) => match connect(inherited.socket.as_fd()) {
            Some(socket) => Link {
                socket,
                owner: me,
                child: None,
            },
            None => launch()?,
        },
        None => launch()?,
    };
    Ok(slot.insert(link))
}

/// A connection of this process's own to the tracker that `inherited`
/// leads to; `None` if that tracker is gone.
fn connect(inherited: BorrowedFd<'_>) -> Option<OwnedFd> {
    let (ours, theirs) = channel::pair().ok()?;
    answer_within(&ours).ok()?;
    send(inherited, &[CONNECT], Some(theirs.as_raw_fd())).ok()?;
    Some(ours)
}

/// A tracker that has closed its socket is dead or on its way: forget it,
/// and reap it if this process started it.
fn retire(slot: &mut Option<Link>) {
    if let Some(Link {
        child: Some(pid),
        owner,
        ..
    }) = slot.take()
    {
        if owner == getpid() {
            reap(pid);
        }
    }
}

/// Waits for our child `pid`, which is ending.
fn reap(pid: Pid) {
    // ECHILD: something else reaped it (`SIGCHLD` ignored, or a
    // `waitpid(-1)` of the program's).
    while let Err(Errno::EINTR) = waitpid(pid, None) {}
}

/// Starts the tracker: a fresh run of this program, holding the other end
/// of a socket that only this process holds; returns once it is ready.
fn launch() -> Result<Link> {
    let refuse = |reason: &str| Error::Io {
        call: "start mpcore's shared memory tracker",
        reason: reason.to_owned(),
    };
    if privileged() {
        return Err(refuse(
            "this program runs with secure execution (set-user-ID, set-group-ID or file \
             capabilities), and mpcore starts no fresh run of such a program",
        ));
    }
    if !mpcore_in_main_executable() {
        return Err(refuse(
            "mpcore is in a shared library here, not in the program itself, so a fresh run of \
             the program would not be mpcore's tracker",
        ));
    }
    let (ours, theirs) = channel::pair()?;
    answer_within(&ours)?;
    let me = getpid();
    let value = format!("{} {me}", theirs.as_raw_fd());
    // No death signal: the tracker must outlive the program.
    let pid = exec_self(TRACKER_ENV, &value, theirs, false).map_err(|e| match e {
        Error::Os { errno, .. } => Error::Os {
            call: "start mpcore's shared memory tracker (a fresh run of this program)",
            errno,
        },
        other => other,
    })?;
    match read_packet(ours.as_fd()) {
        Ok(packet) if packet.first() == Some(&READY) => Ok(Link {
            socket: ours,
            owner: me,
            child: Some(pid),
        }),
        other => {
            let _ = kill(pid, Signal::SIGKILL);
            reap(pid);
            Err(match other {
                Err(Refused::Failed(e)) => e,
                _ => refuse("it ended as it started"),
            })
        }
    }
}

/// Sends one request to track `file`. Once it is sent, the descriptor
/// waits in the tracker's socket until the tracker takes it; only a
/// tracker killed before then (by `SIGKILL`, the one signal it cannot
/// ignore) loses it. No answer is awaited (as CPython's programs write to
/// their resource tracker's pipe and go on), so a segment costs no round
/// trip to another process.
fn ask(link: &Link, file: BorrowedFd<'_>, name: &str) -> std::result::Result<(), Refused> {
    let mut packet = Vec::with_capacity(1 + name.len());
    packet.push(TRACK);
    packet.extend_from_slice(name.as_bytes());
    send(link.socket.as_fd(), &packet, Some(file.as_raw_fd()))
}

/// Sends one packet, with a descriptor if there is one.
fn send(
    socket: BorrowedFd<'_>,
    packet: &[u8],
    fd: Option<i32>,
) -> std::result::Result<(), Refused> {
    let fds = fd.map(|fd| [fd]);
    let rights = fds.as_ref().map(|fds| ControlMessage::ScmRights(fds));
    loop {
        match sendmsg::<()>(
            socket.as_raw_fd(),
            &[IoSlice::new(packet)],
            rights.as_slice(),
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN) => return Err(Refused::Gone),
            // The socket's send timeout: its buffer stayed full.
            Err(Errno::EAGAIN) => return Err(Refused::Failed(not_answering())),
            Err(e) => return Err(Refused::Failed(Error::os("sendmsg", e))),
        }
    }
}

/// Makes every wait on `socket` end after [`ANSWER_WITHIN`]: for a
/// packet, or for room to send one.
fn answer_within(socket: &OwnedFd) -> Result<()> {
    let limit = TimeVal::new(ANSWER_WITHIN.as_secs() as _, 0);
    setsockopt(socket, sockopt::ReceiveTimeout, &limit)
        .and_then(|()| setsockopt(socket, sockopt::SendTimeout, &limit))
        .map_err(|e| Error::os("setsockopt", e))
}

/// What a tracker that neither starts nor reads its socket in time
/// comes to.
fn not_answering() -> Error {
    Error::Io {
        call: "track a shared memory segment",
        reason: format!(
            "mpcore's tracker process did not answer within {} s (is it stopped?)",
            ANSWER_WITHIN.as_secs()
        ),
    }
}

/// The next packet from the tracker, waiting for it at most
/// [`ANSWER_WITHIN`] (the socket's receive timeout). End of file is
/// [`Refused::Gone`].
fn read_packet(socket: BorrowedFd<'_>) -> std::result::Result<Vec<u8>, Refused> {
    let mut buf = [0u8; 64];
    loop {
        match recv(socket.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(0) => return Err(Refused::Gone),
            Ok(n) => return Ok(buf[..n].to_vec()),
            Err(Errno::EINTR) => continue,
            // The socket's receive timeout.
            Err(Errno::EAGAIN) => return Err(Refused::Failed(not_answering())),
            Err(Errno::ECONNRESET) => return Err(Refused::Gone),
            Err(e) => return Err(Refused::Failed(Error::os("recv", e))),
        }
    }
}

/// Whether mpcore lies in the program's own executable, not in a shared
/// library (a Python extension, say): only then is a fresh run of
/// `/proc/self/exe` reached by mpcore's constructor. Where the loader
/// cannot tell (a static executable), it is.
fn mpcore_in_main_executable() -> bool {
    // SAFETY: `getauxval` only reads the auxiliary vector; AT_PHDR is the
    // address of the program's own headers, inside its image.
    let program = unsafe { libc::getauxval(libc::AT_PHDR) } as usize;
    let ours = mpcore_in_main_executable as fn() -> bool as usize;
    match (image_base(program), image_base(ours)) {
        (Some(program), Some(ours)) => program == ours,
        _ => true,
    }
}

/// The start of the loaded image that holds `address`, as the dynamic
/// loader knows it.
fn image_base(address: usize) -> Option<usize> {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    // SAFETY: `dladdr` only reads the loader's tables and writes `info`,
    // which is ours and large enough; it accepts any address.
    let found = unsafe { libc::dladdr(address as *const libc::c_void, info.as_mut_ptr()) };
    // SAFETY: zero-initialised, and filled in by `dladdr` when it succeeds.
    let info = unsafe { info.assume_init() };
    (found != 0 && !info.dli_fbase.is_null()).then_some(info.dli_fbase as usize)
}
