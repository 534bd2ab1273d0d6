//! Python's `starmap`: a task of several arguments, each task's arguments
//! one tuple. [`StarFn`] says which functions qualify, and how each
//! becomes the one-argument `fn((A, B)) -> R` that the pool runs.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{AsyncResult, Pool};
use crate::base::Result;

/// A task of two or three arguments for [`Pool::starmap`] and
/// [`Pool::starmap_async`]: a `fn`, or a closure that captures nothing,
/// taking `A, B` (`Args = (A, B)`) or `A, B, C` (`Args = (A, B, C)`).
///
/// Sealed: mpcore implements it for exactly those, and nothing else can.
///
/// A closure that captures something cannot travel to a worker (its
/// captures are not serialized), and is refused when the program is
/// built:
///
/// ```compile_fail
/// let pool = mpcore::Pool::new(1)?;
/// let k = 3u64;
/// pool.starmap(move |a: u64, b: u64| a * b * k, [(1, 2)])?;
/// # Ok::<(), mpcore::Error>(())
/// ```
///
/// For four arguments or more, [`Pool::map`] with a closure that unpacks
/// the tuple does the same: `pool.map(|(a, b, c, d): (u8, u8, u8, u8)|
/// f(a, b, c, d), quads)`.
pub trait StarFn<Args, R>: Copy + 'static + sealed::Sealed<Args, R> {
    /// The same task as a `fn` of one tuple, which the pool can send.
    #[doc(hidden)]
    fn one_argument() -> fn(Args) -> R;
}

mod sealed {
    pub trait Sealed<Args, R> {}
}

/// The task of type `F`, in a process where one was made. `F` is a `fn`
/// item or a closure without captures: a type of no bytes, whose every
/// value is the same.
fn the_task<F: Copy + 'static>() -> F {
    const {
        assert!(
            size_of::<F>() == 0,
            "a starmap task must capture nothing: pass a fn, or a closure without captures"
        );
    }
    // SAFETY: `F` has no bytes (checked above, when the program is
    // built), so there is nothing to initialize, and it is inhabited: this
    // runs only inside a task of `Pool::starmap`, whose caller held a value
    // of `F`, in this program (a forked worker, or a fresh run of the same
    // executable). `F: Copy`, so making another value of it takes nothing
    // from anyone: the caller could have copied theirs.
    unsafe { std::mem::zeroed() }
}

fn star2<F, A, B, R>((a, b): (A, B)) -> R
where
    F: Fn(A, B) -> R + Copy + 'static,
{
    the_task::<F>()(a, b)
}

fn star3<F, A, B, C, R>((a, b, c): (A, B, C)) -> R
where
    F: Fn(A, B, C) -> R + Copy + 'static,
{
    the_task::<F>()(a, b, c)
}

impl<F, A, B, R> sealed::Sealed<(A, B), R> for F where F: Fn(A, B) -> R + Copy + 'static {}

impl<F, A, B, R> StarFn<(A, B), R> for F
where
    F: Fn(A, B) -> R + Copy + 'static,
{
    fn one_argument() -> fn((A, B)) -> R {
        star2::<F, A, B, R>
    }
}

impl<F, A, B, C, R> sealed::Sealed<(A, B, C), R> for F where F: Fn(A, B, C) -> R + Copy + 'static {}

impl<F, A, B, C, R> StarFn<(A, B, C), R> for F
where
    F: Fn(A, B, C) -> R + Copy + 'static,
{
    fn one_argument() -> fn((A, B, C)) -> R {
        star3::<F, A, B, C, R>
    }
}

impl Pool {
    /// Calls `f` with each tuple's items as its arguments, in the workers,
    /// and returns the results in input order (Python's
    /// `pool.starmap(f, [(1, 2), (3, 4)])`). `f` takes two or three
    /// arguments ([`StarFn`]); chunks as [`map`](Self::map).
    ///
    /// ```
    /// fn power(base: u64, exp: u32) -> u64 {
    ///     base.pow(exp)
    /// }
    ///
    /// let pool = mpcore::Pool::new(2)?;
    /// assert_eq!(pool.starmap(power, [(2, 10), (3, 2), (10, 3)])?, [1024, 9, 1000]);
    /// let sums = pool.starmap(|a: u8, b: u8, c: u8| a + b + c, [(1, 2, 3), (4, 5, 6)])?;
    /// assert_eq!(sums, [6, 15]);
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`map`](Self::map).
    pub fn starmap<F, Args, R>(
        &self,
        f: F,
        inputs: impl IntoIterator<Item = Args>,
    ) -> Result<Vec<R>>
    where
        F: StarFn<Args, R>,
        Args: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let _ = f; // its type is the task
        self.map(F::one_argument(), inputs)
    }

    /// [`starmap`](Self::starmap) that returns at once with a handle to
    /// the results (Python's `pool.starmap_async`), as
    /// [`map_async`](Self::map_async).
    ///
    /// ```
    /// let pool = mpcore::Pool::new(2)?;
    /// let products = pool.starmap_async(|a: u32, b: u32| a * b, [(2, 3), (4, 5)])?;
    /// assert_eq!(products.get()?, [6, 20]);
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`map_async`](Self::map_async).
    pub fn starmap_async<F, Args, R>(
        &self,
        f: F,
        inputs: impl IntoIterator<Item = Args>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: StarFn<Args, R>,
        Args: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let _ = f; // its type is the task
        self.map_async(F::one_argument(), inputs)
    }
}
