//! `waitid` that reads every way a child can end. nix's wait calls fail
//! with `EINVAL` for a child killed by a signal nix's `Signal` cannot
//! name (a real-time one, `SIGRTMIN + n`), and that child would never be
//! reported or reaped.

use nix::errno::Errno;
use nix::unistd::Pid;

use crate::base::{ExitStatus, Signal};

/// Which children a wait is about.
#[derive(Clone, Copy)]
pub(crate) enum Which {
    /// This one.
    Pid(Pid),
    /// Any child.
    Any,
}

/// `waitid(which, WEXITED | flags)`: the child that has ended and how, or
/// `None` (with `WNOHANG`, when none has). `flags` adds `WNOHANG` and
/// `WNOWAIT` (look without reaping). `EINTR` is retried.
pub(crate) fn ended(which: Which, flags: libc::c_int) -> nix::Result<Option<(Pid, ExitStatus)>> {
    let (idtype, id) = match which {
        Which::Pid(pid) => (libc::P_PID, pid.as_raw() as libc::id_t),
        Which::Any => (libc::P_ALL, 0),
    };
    // SAFETY: an all-zero `siginfo_t` is a valid value (plain integers);
    // `waitid` fills it in.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `info` is ours and large enough; the other arguments are
        // numbers.
        let rc = unsafe { libc::waitid(idtype, id, &mut info, libc::WEXITED | flags) };
        match Errno::result(rc) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
            Ok(_) => break,
        }
    }
    // SAFETY: after a successful `waitid` the union holds a child's
    // fields (all zero when `WNOHANG` found none).
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    let status = match info.si_code {
        libc::CLD_EXITED => ExitStatus::Code(status),
        _ => ExitStatus::Signal(Signal::from_number(status)),
    };
    Ok(Some((Pid::from_raw(pid), status)))
}
