//! A named segment's tracker: a small process that removes the name once
//! the segment's last user is gone (see the map in `mod.rs`).

use std::ffi::CString;

use nix::errno::Errno;

use crate::base::{Error, Result};

/// Starts the process that removes `path` once no process holds a shared
/// `flock` on it any more, and returns once it runs on its own.
pub(super) fn start_tracker(path: &str) -> Result<()> {
    // Everything the tracker needs is made before the fork: after it, in
    // a child of a process that may have threads, only async-signal-safe
    // calls are allowed (no allocation, no lock).
    let path = CString::new(path).map_err(|_| Error::BadSegment {
        what: "a shared memory segment's name cannot hold a NUL".to_owned(),
    })?;
    // SAFETY: the child calls only async-signal-safe functions (setsid,
    // fork, close_range or close, open, flock, fstat, stat, unlink, _exit)
    // and never returns into Rust code.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => return Err(Error::os("fork", Errno::last())),
        // SAFETY: as above.
        0 => unsafe { tracker_first_child(&path) },
        _ => {}
    }
    // The first child exits at once, leaving the tracker to init; reap it.
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child, with a valid status pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        match rc {
            -1 if Errno::last() == Errno::EINTR => continue,
            // ECHILD: SIGCHLD is ignored, and the kernel reaped it.
            _ => break,
        }
    }
    Ok(())
}

/// The first child: a session of its own, then the tracker as its child,
/// then `_exit`, so that the tracker is adopted by init (nobody's zombie)
/// and survives its creator.
///
/// # Safety
///
/// To be called only in a freshly forked child; it never returns.
unsafe fn tracker_first_child(path: &CString) -> ! {
    // SAFETY: all async-signal-safe; see `start_tracker`.
    unsafe {
        libc::setsid();
        if libc::fork() == 0 {
            track(path);
        }
        libc::_exit(0)
    }
}

/// The tracker: waits until every user of the segment has let go of its
/// shared lock, then removes the name (if it still names this segment).
///
/// # Safety
///
/// As [`tracker_first_child`].
unsafe fn track(path: &CString) -> ! {
    // SAFETY: all async-signal-safe; see `start_tracker`.
    unsafe {
        // Every inherited descriptor goes: a copy of the creator's locked
        // one would keep its shared lock alive for ever, one of another
        // segment would keep that one's tracker waiting, a pipe would keep
        // a reader from seeing its end.
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
            let max = libc::sysconf(libc::_SC_OPEN_MAX).clamp(1024, 1 << 20) as i32;
            for fd in 0..max {
                libc::close(fd);
            }
        }
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            // Gone already (an `unlink`).
            libc::_exit(0);
        }
        while libc::flock(fd, libc::LOCK_EX) != 0 {
            if *libc::__errno_location() != libc::EINTR {
                libc::_exit(1);
            }
        }
        let mut held: libc::stat = std::mem::zeroed();
        let mut named: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut held) == 0
            && libc::stat(path.as_ptr(), &mut named) == 0
            && held.st_ino == named.st_ino
            && held.st_dev == named.st_dev
        {
            libc::unlink(path.as_ptr());
        }
        libc::_exit(0)
    }
}
