//! Starting a child, below the public [`Process`](crate::Process) and
//! [`Pool`](crate::Pool): above `wire/`, `os/` and `base/`.
//!
//! - `child.rs`: a child's life after the fork, to `_exit` (never
//!   unwinding into the parent's code);
//! - `streams.rs`: the std streams' locks, taken across a fork made
//!   while other threads run;
//! - `task.rs`: a task that travels to a fresh program: its entry, its
//!   argument and the handles' descriptors;
//! - `identity.rs`: who this process is (its name, daemon flag, start
//!   method and parent), recorded by a child as it begins;
//! - `forker.rs`: the thread that forks for the program's other threads,
//!   so that a child dies with its parent process, not with a thread;
//! - `exec.rs`: the re-executed program; `hook.rs`, the hook before
//!   `main` that sends it to its task; `request.rs`, what a fresh run
//!   checks before it obeys mpcore's variable (the hook, the fork server
//!   and the tracker alike);
//! - `image.rs`: what the loaded images say: the table of task entries,
//!   mpcore's own code, whether a fresh run of the program reaches the
//!   hook at all;
//! - `forkserver/`: the fork server: what the two sides say (`mod.rs`),
//!   the program's servers and requests (`servers.rs`, `client.rs`), and
//!   the server's own loop (`server.rs`, `intake.rs`);
//! - `tracker/`: the tracker of named shared memory segments, one small
//!   process per program that removes a name once its last user is gone:
//!   its client side (`client.rs`), its loop (`server.rs`) and its files
//!   (`watch.rs`).

pub(crate) mod child;
pub(crate) mod exec;
pub(crate) mod forker;
pub(crate) mod forkserver;
mod hook;
pub(crate) mod identity;
pub(crate) mod image;
mod request;
pub(crate) mod streams;
pub(crate) mod task;
pub(crate) mod tracker;

pub(crate) use child::Outcome;
pub(crate) use task::Task;
