//! What a fresh run of the program trusts of a request in its
//! environment, before `main`: the checks that the door (`hook.rs`), the
//! fork server and the tracker each make before they obey mpcore's
//! variable ([`take_request`]), and whether this program runs with
//! privileges it did not start with ([`privileged`]).

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use nix::unistd::{Pid, getegid, geteuid, getgid, getppid, getuid};

use super::child::exit_now;

/// The checks that every fresh run of the program makes before it obeys
/// mpcore's variable `var` (a spawned child's, the fork server's): takes
/// `var` out of the environment, and returns the socket and the parent's
/// pid it names if all of this holds:
///
/// - no secure execution (`AT_SECURE`), and real ids equal to effective
///   ones: a door before `main` must not open in a privileged program;
/// - the value reads `"<descriptor> <pid>"`, optionally followed by a
///   space and the program's name, with a descriptor above the standard
///   streams;
/// - that descriptor is a Unix `SOCK_SEQPACKET` socket, which the process
///   `<pid>` made (`SO_PEERCRED`), as a process of our user, and `<pid>`
///   is our parent.
///
/// Otherwise `None`, and nothing else happens: `main` runs as if the
/// variable had never been set, and no descriptor of the program's is
/// touched. One case ends the run instead: a request that holds but for
/// its parent, which has died since (this run was reparented): it has
/// nothing to do, and must not run `main` in the task's stead; it exits
/// with status 0.
///
/// When the request holds, the socket becomes close-on-exec, and this run
/// takes the program's name (`PR_SET_NAME`): without it `ps`, `top` and
/// `killall` would call it `exe`, after `/proc/self/exe`.
pub(crate) fn take_request(var: &str) -> Option<(OwnedFd, Pid)> {
    let value = std::env::var_os(var)?;
    // SAFETY: `remove_var` must not race with another thread that reads or
    // writes the environment. This runs in a constructor, before `main`:
    // none of the program's own code has run, and std has started no
    // thread. A thread exists only if a constructor of another library
    // started one. If such a thread reads the environment through std, it
    // waits for the lock that `remove_var` holds; through libc's `getenv`
    // at this very instant, it reads an array whose pointers glibc's
    // `unsetenv` moves, under its own lock, without freeing any string
    // (this one was put on the stack by `exec`): it finds the variable or
    // not, and reads no freed memory. Removed so that `main`, and the
    // programs this run starts, never see it.
    unsafe { std::env::remove_var(var) };
    if privileged() {
        return None;
    }
    let (socket, parent, name) = parse(&value)?;
    if !is_task_socket(socket) {
        return None;
    }
    let peer = peer_credentials(socket)?;
    if peer.pid != parent.as_raw() || peer.uid != getuid().as_raw() {
        return None;
    }
    if getppid() != parent {
        if is_gone(parent) {
            exit_now(0);
        }
        return None;
    }
    // SAFETY: the descriptor is open, and it is the socket our parent made
    // for this run (checked just above); nothing in this fresh program
    // knows of it, let alone owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(socket) };
    // Programs this run starts must not inherit it.
    // SAFETY: `fcntl(F_SETFD)` on a descriptor we own touches no memory.
    unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    take_name(name);
    Some((socket, parent))
}

/// Whether this run is privileged: under secure execution (the kernel's
/// `AT_SECURE`: set-user-ID, set-group-ID, file capabilities), or with
/// effective ids that differ from the real ones.
pub(crate) fn privileged() -> bool {
    // SAFETY: `getauxval` reads the auxiliary vector; an absent entry is 0.
    let secure = unsafe { libc::getauxval(libc::AT_SECURE) } != 0;
    secure || getuid() != geteuid() || getgid() != getegid()
}

/// `"<descriptor> <pid>[ <name>]"`, in plain decimal digits, with a
/// descriptor above the standard streams and a positive pid.
fn parse(value: &OsStr) -> Option<(RawFd, Pid, &[u8])> {
    let mut parts = value.as_bytes().splitn(3, |&b| b == b' ');
    let number = |part: Option<&[u8]>| -> Option<i32> {
        let digits = part.filter(|d| !d.is_empty() && d.len() <= 10)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    let socket = number(parts.next()).filter(|&fd| fd > 2)?;
    let parent = number(parts.next()).filter(|&pid| pid > 0)?;
    Some((socket, Pid::from_raw(parent), parts.next().unwrap_or(&[])))
}

/// Reads an `int` socket option of `fd`; `None` if it is no socket.
fn int_option(fd: RawFd, option: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `getsockopt` writes at most `len` bytes into `value`, which
    // is ours; any descriptor number is accepted (errors for a closed one
    // or one that is no socket).
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    (rc == 0 && len as usize == size_of::<libc::c_int>()).then_some(value)
}

/// Whether `fd` is a socket of the kind mpcore's task sockets are: Unix,
/// `SOCK_SEQPACKET`.
fn is_task_socket(fd: RawFd) -> bool {
    int_option(fd, libc::SO_DOMAIN) == Some(libc::AF_UNIX)
        && int_option(fd, libc::SO_TYPE) == Some(libc::SOCK_SEQPACKET)
}

/// Who made the socket `fd` (for a socket pair, the process that made the
/// pair, as it was then).
fn peer_credentials(fd: RawFd) -> Option<libc::ucred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: as in `int_option`, with a `ucred` of ours.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    (rc == 0 && len as usize == size_of::<libc::ucred>()).then_some(cred)
}

/// Whether the process `pid` has ended: no such process, or a zombie.
fn is_gone(pid: Pid) -> bool {
    if nix::sys::signal::kill(pid, None) == Err(nix::errno::Errno::ESRCH) {
        return true;
    }
    // The state is the first field after the name, which ends with the
    // last ')'.
    std::fs::read(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let after_name = stat
            .iter()
            .rposition(|&b| b == b')')
            .map_or(&[][..], |i| &stat[i + 1..]);
        matches!(after_name.trim_ascii_start().first(), Some(b'Z' | b'X'))
    })
}

/// Names this run after the program (its first 15 bytes, as the kernel
/// keeps them), if a name came.
fn take_name(name: &[u8]) {
    if name.is_empty() {
        return;
    }
    let mut comm = [0u8; 16];
    let len = name.len().min(15);
    comm[..len].copy_from_slice(&name[..len]);
    // SAFETY: `PR_SET_NAME` reads a NUL-terminated string of at most 16
    // bytes: `comm` is one.
    unsafe { libc::prctl(libc::PR_SET_NAME, comm.as_ptr()) };
}
