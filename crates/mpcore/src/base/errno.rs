//! [`Errno`]: what the kernel says when a system call fails, in
//! mpcore's own type.

/// What the kernel said when a system call failed: an `errno` value
/// ([`Error::Os`](crate::Error::Os)). It prints as the C library names and describes it
/// (`EMFILE: Too many open files`), and converts to a
/// [`std::io::Error`].
///
/// ```
/// let e = std::io::Error::from(mpcore::Errno::from_raw(libc::EMFILE));
/// assert_eq!(e.raw_os_error(), Some(libc::EMFILE));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(i32);

impl Errno {
    /// The error with this number.
    pub const fn from_raw(errno: i32) -> Errno {
        Errno(errno)
    }

    /// Its number, to compare with `libc::EMFILE` and the like.
    pub const fn raw(self) -> i32 {
        self.0
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&nix::errno::Errno::from_raw(self.0), f)
    }
}

impl std::fmt::Debug for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&nix::errno::Errno::from_raw(self.0), f)
    }
}

impl From<Errno> for std::io::Error {
    fn from(errno: Errno) -> std::io::Error {
        std::io::Error::from_raw_os_error(errno.0)
    }
}
