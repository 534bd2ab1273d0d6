//! Who this process is, for `current_process()` and `parent_process()`:
//! its name, whether it is a daemon, the start method that made it and
//! its parent. The main process has none recorded (it is `MainProcess`);
//! a child records its own as it begins, before its task: a forked child
//! right after the fork, a fresh run of the program (spawned, or a child
//! of the fork server) from the packet that came with its task
//! (`task.rs`).

use std::sync::atomic::{AtomicPtr, Ordering};

use serde::{Deserialize, Serialize};

use crate::base::StartMethod;

/// A child's identity, as its parent gave it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Identity {
    pub(crate) name: String,
    pub(crate) daemon: bool,
    /// `StartMethod` as a number (`method_number`): the wire needs no
    /// serde in `base/`.
    method: u8,
    /// The process that asked for this child: for a child of the fork
    /// server, the program, not the server.
    pub(crate) parent_pid: i32,
    pub(crate) parent_name: String,
}

impl Identity {
    /// The identity of a child about to be started by this process.
    pub(crate) fn of_child(name: String, daemon: bool, method: StartMethod) -> Identity {
        let (parent_name, _) = current_name_and_daemon();
        Identity {
            name,
            daemon,
            method: match method {
                StartMethod::Fork => 0,
                StartMethod::Spawn => 1,
                StartMethod::ForkServer => 2,
            },
            parent_pid: nix::unistd::getpid().as_raw(),
            parent_name: parent_name.to_owned(),
        }
    }

    /// The start method that made the child (`Fork` for a number that no
    /// sender of ours writes).
    pub(crate) fn method(&self) -> StartMethod {
        match self.method {
            1 => StartMethod::Spawn,
            2 => StartMethod::ForkServer,
            _ => StartMethod::Fork,
        }
    }
}

/// This process's identity, once it has recorded one: null in the main
/// process. A pointer, not a lock: a forked child inherits it as it was,
/// and a lock another thread held at the fork would stay held in it.
static CURRENT: AtomicPtr<Identity> = AtomicPtr::new(std::ptr::null_mut());

/// This process's identity; `None` in the main process.
pub(crate) fn current() -> Option<&'static Identity> {
    let ptr = CURRENT.load(Ordering::Acquire);
    // SAFETY: a non-null pointer came from `Box::leak` in `record`, and
    // no identity is ever freed: it lives as long as the process.
    unsafe { ptr.as_ref() }
}

/// The name and daemon flag of this process: `MainProcess` and `false`
/// in the main process.
pub(crate) fn current_name_and_daemon() -> (&'static str, bool) {
    match current() {
        Some(identity) => (&identity.name, identity.daemon),
        None => ("MainProcess", false),
    }
}

/// Records `identity` as this process's, in a child as it begins. The
/// previous one (the parent's, inherited by a fork) is left in place,
/// not freed: one small allocation per process.
pub(crate) fn record(identity: Identity) {
    let ptr = Box::into_raw(Box::new(identity));
    CURRENT.store(ptr, Ordering::Release);
}
