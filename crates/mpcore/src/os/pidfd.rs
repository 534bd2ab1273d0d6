//! Pidfds: a descriptor for one process, readable when it exits, that
//! signals exactly that process (never a later one with its pid).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::unistd::Pid;

/// `pidfd_send_signal(pidfd, signal, NULL, 0)`: signals exactly the
/// process the pidfd was opened for. `signal` is a number, so that a
/// real-time signal can be sent too (nix's `Signal` has none).
pub(crate) fn send_signal(pidfd: BorrowedFd<'_>, signal: libc::c_int) -> nix::Result<()> {
    // SAFETY: the call takes a descriptor we hold open, a signal number, a
    // null `siginfo` (the kernel then fills one in as `kill` would) and no
    // flags; it touches no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    Errno::result(rc).map(drop)
}

/// A pidfd becomes readable when the child exits, so a wait can watch the
/// child's exit and its result socket at once. `None` on kernels before 5.3:
/// then waits fall back to short polls of `waitpid`.
pub(crate) fn open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this descriptor to us; we are its
    // only owner.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
