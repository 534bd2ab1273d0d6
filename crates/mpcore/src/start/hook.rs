//! The door before `main`: a constructor of mpcore's (a function in the
//! ELF `.init_array`, which the loader calls before `main`) that sends a
//! fresh run of the program to its task when mpcore started it as a
//! spawned child or as the fork server, and otherwise returns at once.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use nix::unistd::Pid;

use super::child::{UNCAUGHT_PANIC_CODE, exit_now};
use super::forkserver::server;
use super::task::run_sent_task;
use crate::base::catch;
use crate::os::fds::is_socket;

/// The variable that tells a fresh run of the program that it is a spawned
/// child: `"<socket descriptor> <parent pid>"`.
pub(crate) const CHILD_ENV: &str = "MPCORE_SPAWNED_CHILD";

/// Run by the loader before `main`, in every program that links mpcore's
/// spawn support (every program that can spawn).
#[used]
#[unsafe(link_section = ".init_array")]
pub(crate) static SPAWNED_CHILD_HOOK: extern "C" fn() = spawned_child_hook;

extern "C" fn spawned_child_hook() {
    // The fork server is a fresh run of the program too, reached the same
    // way (`forkserver/server.rs`); it never returns either.
    server::serve_if_asked();
    super::tracker::server::serve_if_asked();
    let Some(value) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    // SAFETY: constructors run before `main`, while the loader's thread is
    // the only one: nobody else can be reading the environment. Removed so
    // that programs this child starts in turn are not taken for spawned
    // children themselves.
    unsafe { std::env::remove_var(CHILD_ENV) };
    let code = catch(|| run_spawned_child(&value)).unwrap_or(UNCAUGHT_PANIC_CODE);
    exit_now(code)
}

/// The child's side, before `main`: reads the task from the socket the
/// parent named in `value` and runs it. Returns the exit code.
fn run_spawned_child(value: &OsStr) -> i32 {
    let parsed = std::str::from_utf8(value.as_bytes()).ok().and_then(|text| {
        let (socket, parent) = text.split_once(' ')?;
        Some((socket.parse::<RawFd>().ok()?, parent.parse::<i32>().ok()?))
    });
    let Some((socket, parent)) = parsed.filter(|&(socket, _)| is_socket(socket)) else {
        eprintln!(
            "mpcore: {CHILD_ENV}={value:?} is set, but this is not a child that mpcore spawned; \
             unset the variable to run the program"
        );
        return 2;
    };
    // Rust's `main` ignores SIGPIPE; this child never gets there.
    // SAFETY: setting a signal's disposition to "ignore" installs no
    // handler of ours; nothing else runs yet.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // SAFETY: the parent left this descriptor open for us alone
    // (`is_socket` checked that it is one); nothing else in this fresh
    // program owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(socket) };
    // Programs this child starts must not inherit it.
    // SAFETY: `fcntl(F_SETFD)` on a descriptor we own touches no memory.
    unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    run_sent_task(socket.as_fd(), Pid::from_raw(parent))
}
