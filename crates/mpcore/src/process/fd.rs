//! The handle as a descriptor: [`AsFd`] and Python's `p.sentinel`, so a
//! child's end can be awaited with `poll`, mio or tokio beside other
//! descriptors; and `join_async` on tokio's reactor (feature `tokio`).

use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use super::Process;

impl<T> Process<T> {
    /// Python's `p.sentinel`: a descriptor that becomes readable when the
    /// child has ended, and stays so. Wait for it with `poll`, `epoll`,
    /// mio or tokio (beside sockets, other children, anything with a
    /// descriptor), then [`join`](Self::join), which no longer blocks but
    /// for the moment it takes to read the result.
    ///
    /// Which descriptor it is:
    /// - a forked or spawned child: its pidfd (`pidfd_open`), readable
    ///   once it has exited;
    /// - a child of the fork server: the socket on which the server
    ///   reports its end, readable once that report is there (or the
    ///   server has died). Read nothing from it: `join` does. Once the
    ///   handle has read the report, a descriptor of mpcore's that is
    ///   always readable (an eventfd, one per program);
    /// - on kernels without pidfds (before Linux 5.3): the child's result
    ///   socket, readable once the child has sent its result or ended,
    ///   which is a moment *before* it has exited; `join` then waits out
    ///   that moment. Once the child is reaped, the always readable
    ///   descriptor, as for a child of the fork server.
    ///
    /// The descriptor belongs to the handle: do not close it, and do not
    /// use it once the handle is dropped.
    ///
    /// ```
    /// use mpcore::Process;
    /// use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    ///
    /// let mut child = Process::spawn(|| 7)?;
    /// let mut fds = [PollFd::new(child.sentinel(), PollFlags::POLLIN)];
    /// assert_eq!(poll(&mut fds, PollTimeout::from(5000u16)).unwrap(), 1);
    /// assert_eq!(child.join()?, 7);
    /// # Ok::<(), mpcore::Error>(())
    /// ```
    pub fn sentinel(&self) -> BorrowedFd<'_> {
        let watch = self.exit_watch();
        if self.has_ended() && self.watch.pidfd.is_none() {
            // The report socket (or the result socket) has been read by
            // now, and its end of file may not have come yet: a
            // descriptor that is always readable says "ended" instead.
            if let Some(ready) = always_readable() {
                return ready;
            }
        }
        watch.unwrap_or(self.results.as_fd())
    }
}

/// An eventfd holding 1 that nobody reads: readable for ever. One per
/// program, made on first use; `None` if it cannot be made (no free
/// descriptor), and the sentinel stays the socket.
fn always_readable() -> Option<BorrowedFd<'static>> {
    static READY: OnceLock<Option<OwnedFd>> = OnceLock::new();
    READY
        .get_or_init(|| {
            // SAFETY: `eventfd` takes a number and flags and returns a new
            // descriptor or -1; it touches no memory of ours.
            let fd = unsafe { libc::eventfd(1, libc::EFD_CLOEXEC) };
            // SAFETY: a descriptor just made for us, owned by nothing else.
            (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .as_ref()
        .map(|fd| fd.as_fd())
}

/// [`Process::sentinel`]: readable once the child has ended.
impl<T> AsFd for Process<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sentinel()
    }
}

#[cfg(feature = "tokio")]
mod tokio_join {
    use std::future::poll_fn;
    use std::os::fd::{AsFd, BorrowedFd};
    use std::task::Poll;
    use std::time::Duration;

    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;

    use super::Process;
    use crate::base::{Error, Result};

    impl<T: Serialize + DeserializeOwned> Process<T> {
        /// [`join`](Self::join) for async code (feature `tokio`): waits
        /// without a thread, on tokio's reactor (`AsyncFd` over the
        /// child's result socket and its [`sentinel`](Self::sentinel)),
        /// and returns what `join` returns. So one task, on one thread,
        /// can await thousands of children.
        ///
        /// ```
        /// # #[cfg(feature = "tokio")] {
        /// # let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
        /// # rt.block_on(async {
        /// let mut child = mpcore::Process::spawn(|| 6 * 7)?;
        /// assert_eq!(child.join_async().await?, 42);
        /// # Ok::<(), mpcore::Error>(())
        /// # }).unwrap();
        /// # }
        /// ```
        ///
        /// Dropping the future before it is done is harmless: the child
        /// runs on, and may be joined again.
        ///
        /// # Errors
        ///
        /// As [`join`](Self::join), and [`Error::Io`] when tokio cannot
        /// watch the descriptors (the sentinel is already registered with
        /// this runtime by an `AsyncFd` of the caller's, say).
        ///
        /// # Panics
        ///
        /// Outside a tokio runtime with I/O enabled, as every tokio I/O
        /// object does.
        ///
        /// On kernels without pidfds (before Linux 5.3) the child's exit
        /// has no descriptor: this awaits its result socket, then waits
        /// out the moment between its last message and its exit blocking
        /// the thread, as `join` does.
        pub async fn join_async(&mut self) -> Result<T> {
            loop {
                match self.join_timeout(Duration::ZERO) {
                    Err(Error::Timeout(_)) => {}
                    done => return done,
                }
                if !self.news().await? {
                    // Nothing left to await: the child has sent all it
                    // will, and only its exit, a moment away, is missing.
                    return self.join();
                }
            }
        }

        /// Awaits news from the child (a message, its hang-up or its
        /// end); `false` when there is no descriptor to await.
        async fn news(&self) -> Result<bool> {
            let socket = (self.outcome.is_none() && !self.hung_up).then(|| self.results.as_fd());
            let watched: Vec<BorrowedFd<'_>> =
                socket.into_iter().chain(self.exit_watch()).collect();
            if watched.is_empty() {
                return Ok(false);
            }
            // `with_interest` is deprecated since tokio 1.54 for an owner
            // type that might close its descriptor while registered; a
            // `BorrowedFd` cannot (its lifetime holds the handle, and
            // with it the descriptor, open), so it is sound here, and it
            // is in every tokio 1.x, which `version = "1"` promises.
            #[allow(deprecated)]
            let fds = watched
                .into_iter()
                .map(|fd| AsyncFd::with_interest(fd, Interest::READABLE))
                .collect::<std::io::Result<Vec<_>>>()
                .map_err(|e| Error::io("AsyncFd::new", e))?;
            poll_fn(|cx| {
                // Every descriptor is asked, so that each one's readiness
                // wakes this task.
                let mut ready = None;
                for fd in &fds {
                    if let Poll::Ready(r) = fd.poll_read_ready(cx) {
                        ready.get_or_insert(r.map(drop));
                    }
                }
                ready.map_or(Poll::Pending, Poll::Ready)
            })
            .await
            .map_err(|e| Error::io("AsyncFd::readable", e))?;
            Ok(true)
        }
    }
}
