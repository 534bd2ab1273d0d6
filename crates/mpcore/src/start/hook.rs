//! The door before `main`: a constructor of mpcore's (a function in the
//! ELF `.init_array`, which the loader calls before `main`) that sends a
//! fresh run of the program to its task when mpcore started it as a
//! spawned child or as the fork server, and otherwise returns at once.
//!
//! It runs in every program that links mpcore, whether or not it ever
//! spawns, so it trusts little (`request.rs`): its variable is always
//! removed, and it is obeyed only if the program does not run under
//! secure execution (set-user-ID, set-group-ID, file capabilities), runs
//! with its real ids as its effective ones, and the variable names a
//! socket of mpcore's kind (`AF_UNIX`, `SOCK_SEQPACKET`) that our parent
//! made, as a process of our user. Then only a task entry that mpcore
//! registered is called, with a function in the program's own code
//! (`task.rs`). Anything else is ignored, silently: `main` runs as if the
//! variable had never been set, and a parent that did ask learns why
//! through its own error. What is left to trust is that parent: a
//! process of the same user that started this one, which could as well
//! have run any code of its own in it.

use std::os::fd::AsFd;

use super::child::{UNCAUGHT_PANIC_CODE, exit_now};
use super::forkserver::server;
use super::request::take_request;
use super::task::{Refused, receive_task, refuse};
use crate::base::catch;

/// The variable that tells a fresh run of the program that it is a spawned
/// child: `"<socket descriptor> <parent pid> <program name>"`.
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
    run_spawned_child_if_asked();
}

/// If this run is a spawned child, runs its task and exits; returns if it
/// is not one (or what came is no task), and `main` runs.
fn run_spawned_child_if_asked() {
    let Some((socket, parent)) = take_request(CHILD_ENV) else {
        return;
    };
    let tx = socket.as_fd();
    let code = catch(|| match receive_task(tx) {
        Ok(task) => {
            // Rust's `main` ignores SIGPIPE; this child never gets there.
            // SAFETY: setting a signal's disposition to "ignore" installs
            // no handler of ours; nothing else of the program runs yet.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
            Some(task.run(tx, parent))
        }
        Err(refused @ Refused::CannotTake(_)) => Some(refuse(tx, &refused)),
        Err(refused @ Refused::NotATask(_)) => {
            refuse(tx, &refused);
            None
        }
    });
    match code {
        Ok(Some(code)) => exit_now(code),
        Err(_) => exit_now(UNCAUGHT_PANIC_CODE),
        // No task: on to `main`, without the socket.
        Ok(None) => {}
    }
}
