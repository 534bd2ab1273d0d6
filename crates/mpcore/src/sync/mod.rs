//! The rest of Python's synchronisation toolbox, beside [`Lock`](crate::Lock)
//! and [`Event`](crate::Event): each one shared memory of its own (a memfd,
//! so it travels to a spawned or forkserver child as a descriptor, as a
//! `Lock` does), and each one built so that a process killed in the middle
//! of using it cannot leave the others waiting for ever.
//!
//! - `rlock.rs`: [`RLock`], a robust mutex (`os/mutex.rs`) that lets the
//!   thread holding it in again, and a depth count;
//! - `semaphore.rs`: [`Semaphore`] (bounded or not), one counter word
//!   and a futex: no lock, so a holder that dies blocks nobody;
//! - `condition.rs`: [`Condition`], a [`Lock`](crate::Lock) and a table
//!   of waiter slots (`waiters.rs`): each waiter sleeps on its own slot's word (a
//!   futex), which a `notify` marks, and holds a robust mutex of its slot
//!   so that a `notify` can tell a killed waiter and skip it (not glibc's
//!   condition variable, which a killed waiter can jam: see `event.rs`).
//!
//! This room sits above `lock.rs` (a `Condition` holds a `Lock`) and below
//! nothing else of the library.

mod condition;
mod rlock;
mod semaphore;
mod waiters;

pub use condition::{Condition, ConditionGuard};
pub use rlock::{RLock, RLockGuard};
pub use semaphore::{Permit, Semaphore};
