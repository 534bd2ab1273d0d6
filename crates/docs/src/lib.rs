//! The chapters of `docs/`, included here so that `cargo test` compiles and
//! runs every Rust block in them: the docs cannot drift from the code.
//! Blocks that are not Rust are marked (`text`, `python`, `console`), and
//! blocks that show what Rust rejects are `compile_fail`. A block that
//! shows a demo's code is marked as such, and `tests/snippets.rs` checks
//! that it is the demo's code, line for line.
//!
//! `unsafe` code lives in mpcore alone, so every block is compiled with it
//! forbidden: the attribute below does that, as the workspace's `[lints]`
//! (see the root Cargo.toml) do not reach doc tests. The chapters reach
//! the published crates' unsafe calls through `mpcore::published`'s safe
//! types. A `compile_fail` block is not checked by this, as it fails
//! either way.

#![doc(test(attr(forbid(unsafe_code))))]

#[doc = include_str!("../../../docs/README.md")]
pub mod index {}

#[doc = include_str!("../../../docs/00-threads-vs-processes.md")]
pub mod ch00_threads_vs_processes {}

#[doc = include_str!("../../../docs/01-process-basics.md")]
pub mod ch01_process_basics {}

#[doc = include_str!("../../../docs/02-ordered-join.md")]
pub mod ch02_ordered_join {}

#[doc = include_str!("../../../docs/03-cpu-count.md")]
pub mod ch03_cpu_count {}

#[doc = include_str!("../../../docs/04-queue.md")]
pub mod ch04_queue {}

#[doc = include_str!("../../../docs/05-timing-comparison.md")]
pub mod ch05_timing_comparison {}

#[doc = include_str!("../../../docs/06-pool.md")]
pub mod ch06_pool {}

#[doc = include_str!("../../../docs/07-shared-memory.md")]
pub mod ch07_shared_memory {}

#[doc = include_str!("../../../docs/08-lock.md")]
pub mod ch08_lock {}

#[doc = include_str!("../../../docs/09-events-producer-consumer.md")]
pub mod ch09_events_producer_consumer {}

#[doc = include_str!("../../../docs/10-performance.md")]
pub mod ch10_performance {}

#[doc = include_str!("../../../docs/11-beyond-one-machine.md")]
pub mod ch11_beyond_one_machine {}

#[doc = include_str!("../../../docs/12-start-methods.md")]
pub mod ch12_start_methods {}

#[doc = include_str!("../../../docs/13-pipes-and-connections.md")]
pub mod ch13_pipes_and_connections {}

#[doc = include_str!("../../../docs/14-synchronisation.md")]
pub mod ch14_synchronisation {}

#[doc = include_str!("../../../docs/15-managers.md")]
pub mod ch15_managers {}
