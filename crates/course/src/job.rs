//! The tutorial's CPU-bound job, kept in one place so that `timing_demo`
//! and the benchmarks measure exactly the same work.
//!
//! The 多进程 tutorial, section 4:
//!
//! ```python
//! def job(q):
//!     res = 0
//!     for i in range(1000000):
//!         res += i + i**2 + i**3
//!     q.put(res)
//! ```
//!
//! ```
//! use course::job::cpu_job;
//!
//! // Two jobs, as in the tutorial's `normal()`.
//! assert_eq!(2 * cpu_job(1_000_000), 499_999_666_667_166_666_000_000);
//! ```

use std::hint::black_box;

/// `res += i + i**2 + i**3` for `i` in `0..n`, the tutorial's `job`.
///
/// The sum needs `u128`: for `n = 1_000_000` it is about 2.5 × 10²³, far
/// past `u64::MAX` (1.8 × 10¹⁹); Python's integers grow as needed. It is
/// exact for every `n` up to 6 × 10⁹.
///
/// Each `i` passes through [`std::hint::black_box`], so the compiler cannot
/// see the loop as a sum of polynomials and replace it with a closed-form
/// formula: the time measured is the time of the loop, as in Python.
pub fn cpu_job(n: u64) -> u128 {
    cpu_job_range(0, n)
}

/// The same sum over `start..end` only, so that the work can be cut into
/// steps: `cpu_job_range(0, k) + cpu_job_range(k, n) == cpu_job(n)`.
///
/// ```
/// use course::job::{cpu_job, cpu_job_range};
///
/// assert_eq!(cpu_job_range(0, 400) + cpu_job_range(400, 1000), cpu_job(1000));
/// // The 多进程 tutorial, section 3: two jobs of range(1000) print 499667166000.
/// assert_eq!(2 * cpu_job(1000), 499_667_166_000);
/// ```
pub fn cpu_job_range(start: u64, end: u64) -> u128 {
    let mut res: u128 = 0;
    for i in start..end {
        let i = u128::from(black_box(i));
        res += i + i * i + i * i * i;
    }
    res
}
