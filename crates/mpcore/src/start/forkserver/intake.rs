//! How the server takes a request in: with room kept for its descriptors,
//! its sender checked, and every way a receive can end told apart (end
//! of file, an error, descriptors the kernel dropped).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use nix::sys::socket::{setsockopt, sockopt};
use nix::unistd::{Gid, Pid, Uid, getgid, getuid};

use super::{FORK, REQUEST_FDS, RETIRE};

/// What came in on the request socket.
pub(super) enum Request {
    /// Fork a child: its report socket, its task socket, and the
    /// requester's working directory.
    Fork {
        reports: OwnedFd,
        task: OwnedFd,
        cwd: OwnedFd,
    },
    /// Fork no more; end with the last child.
    Retire,
    /// A request not taken: answer `REFUSED` with `errno` on `reports`.
    Refuse { reports: OwnedFd, errno: Errno },
    /// Nothing to do: a packet that is no request of the program's, with
    /// nowhere to answer, or nothing yet.
    Nothing,
    /// End of file: the program has ended (or its socket is unusable).
    End,
}

/// The server's request socket, and room kept for what comes on it.
pub(super) struct Intake {
    requests: OwnedFd,
    /// The only process whose requests are served.
    program: Pid,
    /// The user and group the server runs as, which a requester must
    /// still have: the server never forks a child with credentials the
    /// program has given up.
    uid: Uid,
    gid: Gid,
    /// Descriptors held only to be closed just before a request comes
    /// in: the kernel drops whatever descriptors of a message find no
    /// free slot, and the request would be lost without an answer.
    reserve: Vec<OwnedFd>,
}

/// How long to pause after a receive failed for want of memory.
const SHORTAGE_PAUSE: Duration = Duration::from_millis(10);

impl Intake {
    pub(super) fn new(requests: OwnedFd, program: Pid) -> Intake {
        // Each request comes with its sender's credentials (the program
        // asks for that on its end too, before the server runs).
        let _ = setsockopt(&requests, sockopt::PassCred, &true);
        let mut intake = Intake {
            requests,
            program,
            uid: getuid(),
            gid: getgid(),
            reserve: Vec::new(),
        };
        intake.refill(REQUEST_FDS);
        intake
    }

    pub(super) fn socket(&self) -> BorrowedFd<'_> {
        self.requests.as_fd()
    }

    /// Every descriptor the intake holds, for a child to close.
    pub(super) fn descriptors(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        std::iter::once(self.requests.as_fd()).chain(self.reserve.iter().map(|fd| fd.as_fd()))
    }

    /// Tops the reserve up to `want` descriptors; whether it got there.
    /// Called after each request, once its descriptors are closed or
    /// kept: there is then room for them, as there was before it.
    pub(super) fn refill(&mut self, want: usize) -> bool {
        while self.reserve.len() < want {
            match fcntl(&self.requests, FcntlArg::F_DUPFD_CLOEXEC(0)) {
                // SAFETY: `fcntl` just made this descriptor, for us alone.
                Ok(fd) => self.reserve.push(unsafe { OwnedFd::from_raw_fd(fd) }),
                Err(_) => return false,
            }
        }
        true
    }

    /// Takes the next request in, without waiting: [`Request::Nothing`]
    /// if none is there.
    ///
    /// Room: the reserve is closed just before the receive, so that the
    /// request's [`REQUEST_FDS`] descriptors find slots. A fork request is
    /// then taken only if one descriptor more can be had: after the fork
    /// the server keeps one of the three (the report socket) and closes
    /// two, and the reserve must be whole again for the next request.
    /// Otherwise the answer is "too many open files" (`EMFILE`), and the
    /// next request finds the room this one leaves.
    pub(super) fn receive(&mut self) -> Request {
        self.reserve.clear();
        let received = match receive(self.requests.as_fd()) {
            Ok(received) => received,
            Err(Errno::EAGAIN) => return Request::Nothing,
            Err(Errno::ENOMEM | Errno::ENOBUFS) => {
                std::thread::sleep(SHORTAGE_PAUSE);
                return Request::Nothing;
            }
            // The socket itself is unusable (it cannot be, but if it
            // were, no request and no end of file could ever come).
            Err(_) => return Request::End,
        };
        if received.bytes == 0 && received.fds.is_empty() && !received.truncated {
            return Request::End;
        }
        let from_program = received
            .sender
            .is_some_and(|sender| sender.pid == self.program.as_raw());
        let unchanged = received.sender.is_some_and(|sender| {
            from_program && sender.uid == self.uid.as_raw() && sender.gid == self.gid.as_raw()
        });
        let mut fds = received.fds.into_iter();
        match (received.bytes, received.byte) {
            // Retiring takes no privilege: the program may ask for it
            // after it has given up the server's credentials.
            (1, RETIRE) if from_program && fds.len() == 0 => Request::Retire,
            (1, FORK) => {
                let Some(reports) = fds.next() else {
                    return Request::Nothing;
                };
                let errno = if !unchanged {
                    Errno::EPERM
                } else if received.truncated {
                    // The kernel dropped some of its descriptors: there
                    // was no free slot for them (the limit was lowered
                    // under the server's reserve).
                    Errno::EMFILE
                } else {
                    match (fds.next(), fds.next(), fds.next()) {
                        (Some(task), Some(cwd), None) if self.refill(1) => {
                            return Request::Fork { reports, task, cwd };
                        }
                        (Some(_), Some(_), None) => Errno::EMFILE,
                        _ => Errno::EBADMSG,
                    }
                };
                Request::Refuse { reports, errno }
            }
            _ => Request::Nothing,
        }
    }
}

/// One packet as it came.
struct Received {
    bytes: usize,
    /// Its first byte: what is asked.
    byte: u8,
    /// Every descriptor that arrived, now ours, even when others were
    /// dropped.
    fds: Vec<OwnedFd>,
    sender: Option<libc::ucred>,
    /// `MSG_CTRUNC`: the kernel dropped descriptors (no free slot, or no
    /// room in the control buffer).
    truncated: bool,
}

/// The control buffer's size, in 8-byte words (so that it is aligned for
/// `cmsghdr`): the sender's credentials, and one descriptor more than a
/// request carries, so that a packet with too many is seen.
const CONTROL_WORDS: usize = {
    // SAFETY: `CMSG_SPACE` is plain arithmetic on its argument.
    let bytes = unsafe {
        libc::CMSG_SPACE(std::mem::size_of::<libc::ucred>() as u32)
            + libc::CMSG_SPACE(((REQUEST_FDS + 1) * std::mem::size_of::<libc::c_int>()) as u32)
    };
    (bytes as usize).div_ceil(8)
};

/// `recvmsg` of one packet, without waiting, taking every descriptor the
/// kernel installed, which nix's parser refuses to give when the control
/// message was truncated (those descriptors would leak).
fn receive(socket: BorrowedFd<'_>) -> nix::Result<Received> {
    let mut data = [0u8; 2];
    let mut control = [0u64; CONTROL_WORDS];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: a `msghdr` of zeros is valid: no name, no buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let bytes = loop {
        // SAFETY: `msg` points at `iov` (which points at `data`) and at
        // `control`, all alive for the call, with their true lengths.
        let n = unsafe {
            libc::recvmsg(
                socket.as_raw_fd(),
                &raw mut msg,
                libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT,
            )
        };
        match Errno::result(n) {
            Ok(n) => break n as usize,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    };
    let mut fds = Vec::new();
    let mut sender = None;
    // SAFETY: `msg` was filled in by `recvmsg`; the macro reads its
    // control fields only.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&raw const msg) };
    while !cmsg.is_null() {
        // SAFETY: a header the macros return lies within `control`,
        // aligned, and the kernel wrote it.
        let header = unsafe { &*cmsg };
        // SAFETY: plain arithmetic, as above.
        let len = header.cmsg_len as usize - unsafe { libc::CMSG_LEN(0) } as usize;
        // SAFETY: the data follows the header, within `control`.
        let data = unsafe { libc::CMSG_DATA(cmsg) };
        match (header.cmsg_level, header.cmsg_type) {
            (libc::SOL_SOCKET, libc::SCM_RIGHTS) => {
                for i in 0..len / std::mem::size_of::<libc::c_int>() {
                    // SAFETY: the kernel wrote `len` bytes of descriptor
                    // numbers there, just installed in this process for
                    // this message: nothing else owns them.
                    let fd = unsafe { data.cast::<libc::c_int>().add(i).read_unaligned() };
                    // SAFETY: as just said.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
            (libc::SOL_SOCKET, libc::SCM_CREDENTIALS)
                if len >= std::mem::size_of::<libc::ucred>() =>
            {
                // SAFETY: the kernel wrote a `ucred` there.
                sender = Some(unsafe { data.cast::<libc::ucred>().read_unaligned() });
            }
            _ => {}
        }
        // SAFETY: `cmsg` is a header of `msg`'s control buffer.
        cmsg = unsafe { libc::CMSG_NXTHDR(&raw const msg, cmsg) };
    }
    Ok(Received {
        bytes,
        byte: data[0],
        fds,
        sender,
        truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;

    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    use nix::unistd::getpid;

    use super::*;
    use crate::wire::channel;

    /// An intake for `program`, and the sending end of its socket.
    fn intake(program: Pid) -> (Intake, OwnedFd) {
        let (ours, theirs) = channel::pair().unwrap();
        (Intake::new(theirs, program), ours)
    }

    fn send(to: &OwnedFd, byte: u8, count: usize) {
        let fds: Vec<OwnedFd> = (0..count).map(|_| channel::pair().unwrap().0).collect();
        let raw: Vec<i32> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
        let rights = [ControlMessage::ScmRights(&raw)];
        let control: &[ControlMessage<'_>] = if count == 0 { &[] } else { &rights };
        sendmsg::<()>(
            to.as_raw_fd(),
            &[IoSlice::new(&[byte])],
            control,
            MsgFlags::empty(),
            None,
        )
        .unwrap();
    }

    fn refused(request: Request) -> Option<Errno> {
        match request {
            Request::Refuse { errno, .. } => Some(errno),
            _ => None,
        }
    }

    #[test]
    fn a_request_of_the_program_is_taken_and_the_reserve_is_whole_again() {
        let (mut intake, program) = intake(getpid());
        assert_eq!(intake.reserve.len(), REQUEST_FDS);
        assert!(matches!(intake.receive(), Request::Nothing));
        send(&program, FORK, REQUEST_FDS);
        assert!(matches!(intake.receive(), Request::Fork { .. }));
        assert!(intake.refill(REQUEST_FDS));
        send(&program, RETIRE, 0);
        assert!(matches!(intake.receive(), Request::Retire));
        drop(program);
        assert!(matches!(intake.receive(), Request::End));
    }

    #[test]
    fn a_request_of_another_process_is_refused() {
        let (mut intake, program) = intake(Pid::from_raw(1));
        send(&program, FORK, REQUEST_FDS);
        assert_eq!(refused(intake.receive()), Some(Errno::EPERM));
        // Nor may another process make the server retire.
        send(&program, RETIRE, 0);
        assert!(matches!(intake.receive(), Request::Nothing));
    }

    #[test]
    fn a_malformed_request_is_answered_or_ignored() {
        let (mut intake, program) = intake(getpid());
        send(&program, FORK, REQUEST_FDS + 1);
        assert_eq!(refused(intake.receive()), Some(Errno::EBADMSG));
        // More descriptors than there is room for: the kernel drops some.
        send(&program, FORK, REQUEST_FDS + 3);
        assert_eq!(refused(intake.receive()), Some(Errno::EMFILE));
        send(&program, FORK, 0);
        assert!(matches!(intake.receive(), Request::Nothing));
        send(&program, b'x', 2);
        assert!(matches!(intake.receive(), Request::Nothing));
    }
}
