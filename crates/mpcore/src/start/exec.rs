//! [`StartMethod::Spawn`](crate::StartMethod::Spawn): a child that is a
//! fresh `exec` of the same program.
//!
//! The parent execs `/proc/self/exe`, which names the very file it runs
//! from even if that file has since been replaced or deleted, with one
//! environment variable set: the number of the child's end of the result
//! socket, and the parent's pid. Before anything else arrives on that
//! socket, the parent has already written two packets to it:
//!
//! 1. an `Entry` (`task.rs`): where the task is, and the descriptors of the handles
//!    in the argument (`SCM_RIGHTS`);
//! 2. the encoded argument (`channel::send_bytes`).
//!
//! In the child, a constructor of mpcore's (`hook.rs`) sees the variable,
//! reads both packets, runs the task, sends its result as a forked child
//! does, and `_exit`s. So `main` never runs a second time, and no set-up is
//! asked of the program: the test harness's own `main` is skipped the same
//! way. A program that does not spawn has the variable unset, and the
//! constructor returns at once.
//!
//! How the task names its function in a fresh run of the program is
//! `task.rs`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::unistd::{Pid, getpid};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::forker;
use super::hook::{CHILD_ENV, SPAWNED_CHILD_HOOK};
use super::task::Task;
use crate::base::{Error, Result};

/// Starts a fresh run of this program that runs `f(arg)`; returns its pid
/// and the parent's end of its result socket.
pub(crate) fn spawn<A, R>(f: fn(A) -> R, arg: &A) -> Result<(Pid, OwnedFd)>
where
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    let task = Task::new(f, arg)?;
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
/// very file this process runs from) with `var=value` in its environment
/// and `keep` open in it under the same number: the one descriptor of ours
/// it inherits (every other is close-on-exec). With `die_with_us`, it gets
/// `PR_SET_PDEATHSIG` SIGKILL before the exec, a signal that follows the
/// thread that calls this (see `forker.rs`). Returns its pid; this
/// process's copy of `keep` is closed. std's `Child` neither waits nor
/// kills when dropped: the caller's handle does both, by pid.
pub(crate) fn exec_self(var: &str, value: &str, keep: OwnedFd, die_with_us: bool) -> Result<Pid> {
    // Name the hook, so that the linker keeps the object that holds it (an
    // archive member nobody refers to is left out, `.init_array` and all).
    std::hint::black_box(&SPAWNED_CHILD_HOOK);
    let socket = keep.as_raw_fd();
    let mut command = Command::new("/proc/self/exe");
    if let Some(name) = std::env::args_os().next() {
        command.arg0(name);
    }
    command.env(var, value);
    // SAFETY: the closure runs in the forked child before `exec`, where
    // only async-signal-safe calls are allowed: it makes at most two
    // system calls and touches no lock and no memory but its integer and
    // its flag.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(socket, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // The setting survives an exec of a program that gains no
            // privileges: the child dies with us from its very start.
            if die_with_us && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
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
