//! [`StartMethod::Spawn`](crate::StartMethod::Spawn): a child that is a
//! fresh `exec` of the same program.
//!
//! The parent execs `/proc/self/exe`, which names the very file it runs
//! from even if that file has since been replaced or deleted, with the
//! program's whole argv (so that `std::env::args()` in the child is the
//! program's) and one environment variable set: the number of the child's
//! end of the result socket, the parent's pid and the program's name (for
//! `ps`: the kernel would call the child `exe`). Before anything else
//! arrives on that socket, the parent has already written three packets to
//! it:
//!
//! 1. an `Entry` (`task.rs`): where the task is, and the descriptors of the handles
//!    in the argument (`SCM_RIGHTS`);
//! 2. the encoded argument (`channel::send_bytes`);
//! 3. the child's identity (`identity.rs`): its name, daemon flag, start
//!    method and parent.
//!
//! In the child, a constructor of mpcore's (`hook.rs`) sees the variable,
//! checks it, reads the packets, records its identity, runs the task, sends its result as a
//! forked child does, and `_exit`s. So `main` never runs a second time,
//! and no set-up is asked of the program: the test harness's own `main` is
//! skipped the same way. A program that does not spawn has the variable
//! unset, and the constructor returns at once. The program's other
//! constructors (its own, its libraries') do run again in the child, as
//! they do in any run of the program.
//!
//! That works only where a fresh run of `/proc/self/exe` reaches mpcore's
//! constructor: [`exec_self`] refuses, with an error that says why and
//! what to do, when `/proc` is missing, when the program was started
//! through the dynamic loader (`ld.so PROGRAM`, where `/proc/self/exe` is
//! the loader), when mpcore is in a library loaded with `dlopen` (a fresh
//! run would be the host program, which would run its own `main`), and
//! when the program runs set-user-ID or set-group-ID or with file
//! capabilities (the child would be under secure execution, where the
//! constructor ignores its variable).
//!
//! How the task names its function in a fresh run of the program is
//! `task.rs`.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::fcntl::{FcntlArg, fcntl};
use nix::sys::statvfs::{FsFlags, statvfs};
use nix::unistd::{Pid, getegid, geteuid, getgid, getpid, getuid};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::forker;
use super::hook::{CHILD_ENV, SPAWNED_CHILD_HOOK};
use super::identity::Identity;
use super::image;
use super::task::Task;
use crate::base::{Error, Result};

/// Starts a fresh run of this program that runs `f(arg)`; returns its pid
/// and the parent's end of its result socket. The child is `identity`.
pub(crate) fn spawn<A, R>(f: fn(A) -> R, arg: &A, identity: &Identity) -> Result<(Pid, OwnedFd)>
where
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    let task = Task::new(f, arg, identity)?;
    start(&task)
}

/// Starts a fresh run of this program that runs `task`.
fn start(task: &Task<'_>) -> Result<(Pid, OwnedFd)> {
    let (ours, theirs) = task.packed()?;
    let value = format!("{} {}", theirs.as_raw_fd(), getpid());
    // Started by a thread that lives as long as the process: the child's
    // death signal then follows the process, not the calling thread.
    let pid = forker::on_lasting_thread(move || exec_self(CHILD_ENV, &value, theirs, true))??;
    Ok((pid, ours))
}

/// Starts a fresh run of this program (`/proc/self/exe`, which names the
/// very file this process runs from) with the program's argv and
/// `var=value` in its environment, and `keep` open in it: the one
/// descriptor of ours it inherits (every other is close-on-exec), under
/// the same number, or under one above the standard streams if it was one
/// of them (a program that closed its standard input, say). `value`
/// begins with `keep`'s number and a space, a number rewritten if it
/// moved; the program's name follows it, after a space, for the child to
/// take. With `die_with_us`, it gets `PR_SET_PDEATHSIG` SIGKILL before the
/// exec, a signal that follows the thread that calls this (see
/// `forker.rs`). Returns its pid; this process's copy of `keep` is closed.
/// std's `Child` neither waits nor kills when dropped: the caller's handle
/// does both, by pid.
///
/// Fails, starting nothing, where the fresh run would not reach mpcore's
/// hook ([`can_run_afresh`]).
pub(crate) fn exec_self(var: &str, value: &str, keep: OwnedFd, die_with_us: bool) -> Result<Pid> {
    // Name the hook, so that the linker keeps the object that holds it (an
    // archive member nobody refers to is left out, `.init_array` and all).
    std::hint::black_box(&SPAWNED_CHILD_HOOK);
    can_run_afresh()?;
    // The child's hook takes no standard stream for its socket.
    let keep = if keep.as_raw_fd() > 2 {
        keep
    } else {
        let fd = fcntl(&keep, FcntlArg::F_DUPFD_CLOEXEC(3)).map_err(|e| Error::os("fcntl", e))?;
        // SAFETY: `F_DUPFD_CLOEXEC` has just made this descriptor, ours alone.
        unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
    };
    let socket = keep.as_raw_fd();
    let mut command = Command::new("/proc/self/exe");
    let mut args = std::env::args_os();
    if let Some(name) = args.next() {
        command.arg0(name);
    }
    command.args(args);
    let mut value = OsString::from(match value.split_once(' ') {
        Some((_, rest)) => format!("{socket} {rest}"),
        None => value.to_owned(),
    });
    if let Some(name) = program_name() {
        value.push(" ");
        value.push(name);
    }
    command.env(var, value);
    let parent = getpid().as_raw();
    // SAFETY: the closure runs in the forked child before `exec`, where
    // only async-signal-safe calls are allowed: it makes at most three
    // system calls and touches no lock and no memory but its integers and
    // its flag.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(socket, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // The setting survives an exec of a program that gains no
            // privileges: the child dies with us from its very start.
            if die_with_us {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                // If we died before it was set, it will never come.
                if libc::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(|e| match e.raw_os_error() {
        Some(errno) => Error::os("exec", nix::errno::Errno::from_raw(errno)),
        None => Error::Io {
            call: "exec",
            reason: e.to_string(),
        },
    })?;
    drop(keep);
    Ok(Pid::from_raw(child.id() as i32))
}

/// The program's name, as `ps` shows it (`/proc/self/comm`, the main
/// thread's): for the child to take.
fn program_name() -> Option<OsString> {
    let mut name = std::fs::read("/proc/self/comm").ok()?;
    if name.last() == Some(&b'\n') {
        name.pop();
    }
    (!name.is_empty()).then(|| OsString::from_vec(name))
}

/// Whether a fresh run of `/proc/self/exe` would reach mpcore's hook, and
/// the hook would obey: an error that says why not, and what to do.
fn can_run_afresh() -> Result<()> {
    let exe = std::fs::metadata("/proc/self/exe").map_err(|e| Error::Io {
        call: "exec of /proc/self/exe",
        reason: format!(
            "StartMethod::Spawn and ForkServer start a fresh run of the program through \
             /proc/self/exe, which names the program's file, and it cannot be read ({e}): is \
             /proc mounted? Mount it, or use StartMethod::Fork"
        ),
    })?;
    if let Some(why) = image::unable_to_rerun() {
        return Err(Error::InvalidArgument(why));
    }
    // Set-user-ID and set-group-ID bits count unless the file system
    // ignores them.
    let honoured =
        !statvfs("/proc/self/exe").is_ok_and(|fs| fs.flags().contains(FsFlags::ST_NOSUID));
    let (uid, gid) = (getuid(), getgid());
    let set_uid = honoured && exe.mode() & libc::S_ISUID != 0 && exe.uid() != uid.as_raw();
    let set_gid = honoured && exe.mode() & libc::S_ISGID != 0 && exe.gid() != gid.as_raw();
    // File capabilities make a run privileged too, but for root, who has
    // them all already; and a run under secure execution for any other
    // reason (a security module's) was most likely started as its fresh
    // run would be.
    let capable = !uid.is_root() && has_capabilities();
    // SAFETY: `getauxval` reads the auxiliary vector; an absent entry is 0.
    let secure = unsafe { libc::getauxval(libc::AT_SECURE) } != 0;
    if set_uid || set_gid || capable || secure || uid != geteuid() || gid != getegid() {
        return Err(Error::InvalidArgument(
            "StartMethod::Spawn and ForkServer cannot start a fresh run of a program that runs \
             set-user-ID or set-group-ID, with file capabilities, under secure execution, or \
             with effective ids other than its real ones: that run would be privileged, and \
             mpcore's hook before main obeys no request there. Use StartMethod::Fork",
        ));
    }
    Ok(())
}

/// Whether the program's file carries capabilities (`security.capability`).
fn has_capabilities() -> bool {
    // SAFETY: with a null buffer of size 0, `getxattr` only reports the
    // attribute's size; both names are C strings.
    let size = unsafe {
        libc::getxattr(
            c"/proc/self/exe".as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    size > 0
}
