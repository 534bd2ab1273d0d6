//! The operating-system layer: each file wraps one kernel or libc
//! mechanism behind a small safe call, and knows nothing of mpcore's
//! public types. Above it only `base/`.
//!
//! - `futex.rs`: sleep on a shared 32-bit word, wake its sleepers;
//! - `deadline.rs`: how long a wait may last;
//! - `mutex.rs`: the robust process-shared pthread mutex;
//! - `memfd.rs`: a shared mapping of an anonymous memfd;
//! - `pidfd.rs`: a descriptor that names one process;
//! - `poll.rs`: waiting for descriptors to become readable;
//! - `wait.rs`: `waitid` for a child's end, whatever signal ended it;
//! - `fds.rs`: descriptors received over a socket (`SCM_RIGHTS`);
//! - `spin.rs`: looking again for a moment before sleeping.

pub(crate) mod deadline;
pub(crate) mod fds;
pub(crate) mod futex;
pub(crate) mod memfd;
pub(crate) mod mutex;
pub(crate) mod pidfd;
pub(crate) mod poll;
pub(crate) mod spin;
pub(crate) mod wait;

/// The number of CPUs this process may run on: see [`crate::cpu_count`].
pub(crate) fn cpu_count() -> usize {
    num_cpus::get()
}
