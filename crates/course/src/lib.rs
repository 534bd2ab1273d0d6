//! What only the course needs beside [`mpcore`]: not published, and free to
//! change with the chapters.
//!
//! | Module | What | Used by |
//! | --- | --- | --- |
//! | [`job`] | the tutorial's CPU-bound job, `res += i + i**2 + i**3` | `timing_demo`, `cluster_demo`, the benchmarks, chapters 5 and 11 |
//! | [`logging`] | log lines in the format of the wongwonggoods tutorial's `logging.basicConfig` | `event_demo`, chapter 9 |
//! | [`floor`] | the physical floors: a raw `fork`, a pipe, `waitpid` | the benchmarks, chapter 10 |
//! | [`published`] | raw_sync and shared_memory, the crates a reader would add, behind safe calls | the examples of chapters 7, 8 and 9, the benchmarks' baselines |
//!
//! mpcore itself is the library that other projects depend on; nothing in
//! it is here only for the course. The `unsafe` code of this crate is the
//! raw `fork` of [`floor`] and the calls that raw_sync and shared_memory
//! ask for in [`published`], each behind a `// SAFETY:` note.
// The examples in these docs are what a reader copies: no unsafe code in them.
#![doc(test(attr(forbid(unsafe_code))))]
#![deny(missing_docs)]

pub mod floor;
pub mod job;
pub mod logging;
pub mod published;
