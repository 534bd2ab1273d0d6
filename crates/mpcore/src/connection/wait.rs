//! [`wait()`]: which of many connections, listeners or processes is
//! ready, in one `ppoll`.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use crate::base::Result;
use crate::os::{deadline, poll};

/// Waits until at least one of `objects` is ready, or `timeout` passes
/// (`None`: for ever), and returns the indices of those that are ready,
/// in order; none after a timeout (Python's
/// `multiprocessing.connection.wait`).
///
/// Anything with a descriptor that becomes readable will do: a
/// [`Connection`](super::Connection) is ready when a message, or the
/// other end's departure, is there to read; a
/// [`Listener`](super::Listener) when a client is waiting to be
/// accepted. Mixed kinds go in as `&dyn AsFd`. An empty list returns at
/// once.
///
/// ```
/// use std::os::fd::AsFd;
/// use std::time::Duration;
/// use mpcore::{Pipe, connection::wait};
///
/// let (a, b) = Pipe::new::<u8, u8>()?;
/// let (c, d) = Pipe::new::<u8, u8>()?;
/// d.send(&1)?;
/// let ready = wait(&[&a as &dyn AsFd, &c], Some(Duration::from_secs(1)))?;
/// assert_eq!(ready, [1]);
/// # drop(b);
/// # Ok::<(), mpcore::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::Os`](crate::Error::Os) if `ppoll` fails.
pub fn wait<F: AsFd>(objects: &[F], timeout: Option<Duration>) -> Result<Vec<usize>> {
    if objects.is_empty() {
        return Ok(Vec::new());
    }
    let fds: Vec<BorrowedFd<'_>> = objects.iter().map(AsFd::as_fd).collect();
    let until = timeout.and_then(deadline::after);
    let ready = poll::readable_any(&fds, until)?;
    Ok(ready
        .iter()
        .enumerate()
        .filter_map(|(i, &r)| r.then_some(i))
        .collect())
}
