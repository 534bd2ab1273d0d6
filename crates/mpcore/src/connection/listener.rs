//! [`Listener`] and [`Client`]: a Unix socket with a name, for programs
//! started separately (Python's `multiprocessing.connection.Listener`
//! and `Client`). Only a peer of the same user gets through
//! (`SO_PEERCRED`, checked by both sides), then the handshake of
//! `auth.rs`.

use std::ffi::OsStr;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, UnixAddr, bind, connect, getsockopt, listen, socket, sockopt,
};
use nix::unistd::{Pid, Uid, getpid};

use super::{Connection, SPIN, auth};
use crate::base::{Error, Result};
use crate::os::{deadline, poll, spin};

/// How long [`Listener::accept`] gives a client to answer the key's
/// challenge, unless [`Listener::set_handshake_timeout`] says otherwise.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A named socket that programs connect to with [`Client::connect`]
/// (Python's `multiprocessing.connection.Listener`).
///
/// The name is a path (the socket file is made readable and writable
/// by its owner alone, and removed when the listener is dropped), or,
/// when it starts with a NUL byte (`"\0name"`, as in Python), a name in
/// Linux's abstract namespace, which leaves no file behind.
///
/// A client of another user is refused before anything is said, and
/// with a key ([`bind_with_authkey`](Self::bind_with_authkey)) a client
/// must also prove that it knows the key, and the listener proves the
/// same to it. A client that fails, sends garbage, or says nothing for
/// the handshake timeout is dropped, and `accept` waits for the next.
///
/// The socket file belongs to the process that bound it: its drop there
/// removes the file, a forked child's copy leaves it. So a listener
/// moved into a forked child's closure loses its file when `spawn`
/// returns (the parent drops its copy of the closure): bind it in the
/// child instead, or use an abstract name.
///
/// ```
/// use mpcore::connection::{Client, Listener};
/// use mpcore::Process;
///
/// let name = format!("\0mpcore-doc-{}", std::process::id());
/// let listener = Listener::bind_with_authkey(&name, b"secret")?;
/// let mut p = Process::spawn(move || {
///     let c = Client::connect_with_authkey::<u32, u32>(&name, b"secret").unwrap();
///     c.send(&20).unwrap();
///     c.recv().unwrap()
/// })?;
/// let c = listener.accept::<u32, u32>()?;
/// let n = c.recv()?;
/// c.send(&(n + 1))?;
/// assert_eq!(p.join()?, 21);
/// # Ok::<(), mpcore::Error>(())
/// ```
pub struct Listener {
    fd: OwnedFd,
    name: Vec<u8>,
    key: Option<Vec<u8>>,
    handshake_timeout: Duration,
    /// The socket file (and its device and inode), for the listener that
    /// made it to remove it; `None` in the abstract namespace.
    file: Option<(PathBuf, u64, u64)>,
    owner: Pid,
}

/// Connects to a [`Listener`] (Python's `multiprocessing.connection.Client`).
#[derive(Debug)]
pub struct Client;

/// The socket address of `name`: abstract when it starts with NUL.
fn address(name: &[u8]) -> Result<UnixAddr> {
    let made = match name {
        [] => return Err(Error::InvalidArgument("a listener's name cannot be empty")),
        [0, rest @ ..] => UnixAddr::new_abstract(rest),
        path => UnixAddr::new(OsStr::from_bytes(path)),
    };
    made.map_err(|e| Error::os("bind", e))
}

fn seqpacket(flags: SockFlag) -> Result<OwnedFd> {
    socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | flags,
        None,
    )
    .map_err(|e| Error::os("socket", e))
}

/// `Err` unless the peer on `fd` runs as this process's user.
fn same_user(fd: BorrowedFd<'_>) -> Result<()> {
    let creds =
        getsockopt(&fd, sockopt::PeerCredentials).map_err(|e| Error::os("getsockopt", e))?;
    let ours = Uid::effective().as_raw();
    if creds.uid() == ours {
        Ok(())
    } else {
        Err(Error::AuthenticationFailed {
            reason: format!(
                "the other side runs as user {}, and this process as user {ours}; only a \
                 peer of the same user is let in",
                creds.uid()
            ),
        })
    }
}

impl Listener {
    /// Listens on `name` with no key: any process of this user may
    /// connect (Python's `Listener(address)`).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the name is taken (`EADDRINUSE`: a socket file
    /// of that name exists), its directory does not exist, or it is too
    /// long (108 bytes).
    pub fn bind(name: impl AsRef<OsStr>) -> Result<Listener> {
        Listener::make(name.as_ref().as_bytes(), None)
    }

    /// Listens on `name`; a client must know `key` (Python's
    /// `Listener(address, authkey=key)`).
    ///
    /// # Errors
    ///
    /// As [`bind`](Self::bind).
    pub fn bind_with_authkey(name: impl AsRef<OsStr>, key: &[u8]) -> Result<Listener> {
        Listener::make(name.as_ref().as_bytes(), Some(key.to_vec()))
    }

    fn make(name: &[u8], key: Option<Vec<u8>>) -> Result<Listener> {
        let addr = address(name)?;
        // Non-blocking, so that an `accept` after a wake-up whose client
        // has gone again waits once more instead of blocking in the call.
        let fd = seqpacket(SockFlag::SOCK_NONBLOCK)?;
        bind(fd.as_raw_fd(), &addr).map_err(|e| Error::os("bind", e))?;
        let file = match name {
            [0, ..] => None,
            path => {
                let path = PathBuf::from(OsStr::from_bytes(path));
                let meta = std::fs::metadata(&path).map_err(|e| Error::io("stat", e))?;
                let file = (path, meta.dev(), meta.ino());
                // Owner-only before anyone can connect: nothing connects
                // before `listen`.
                let chmod = nix::sys::stat::fchmodat(
                    nix::fcntl::AT_FDCWD,
                    &file.0,
                    nix::sys::stat::Mode::from_bits_truncate(0o600),
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                );
                if let Err(e) = chmod {
                    let _ = std::fs::remove_file(&file.0);
                    return Err(Error::os("chmod", e));
                }
                Some(file)
            }
        };
        let listener = Listener {
            fd,
            name: name.to_vec(),
            key,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            file,
            owner: getpid(),
        };
        let backlog = nix::sys::socket::Backlog::new(128).map_err(|e| Error::os("listen", e))?;
        listen(&listener.fd, backlog).map_err(|e| Error::os("listen", e))?;
        Ok(listener)
    }

    /// How long a client has for the handshake (5 s unless set): a
    /// client that is slower is dropped.
    pub fn set_handshake_timeout(&mut self, timeout: Duration) {
        self.handshake_timeout = timeout;
    }

    /// The name it listens on, as given.
    pub fn name(&self) -> &OsStr {
        OsStr::from_bytes(&self.name)
    }

    /// Waits for a client and returns the connection to it (Python's
    /// `accept`). A client of another user, with the wrong key, or that
    /// fails the handshake in any other way is dropped, and the wait goes
    /// on.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when `accept` fails (no free descriptor, `EMFILE`).
    pub fn accept<S, R>(&self) -> Result<Connection<S, R>> {
        self.accept_until(None, Duration::MAX)
    }

    /// Like [`accept`](Self::accept), but gives up with
    /// [`Error::Timeout`] when no client has got in within `timeout`.
    ///
    /// # Errors
    ///
    /// As [`accept`](Self::accept), and [`Error::Timeout`].
    pub fn accept_timeout<S, R>(&self, timeout: Duration) -> Result<Connection<S, R>> {
        self.accept_until(deadline::after(timeout), timeout)
    }

    fn accept_until<S, R>(
        &self,
        until: Option<Instant>,
        timeout: Duration,
    ) -> Result<Connection<S, R>> {
        // A client that connects again at once (a loop of short
        // connections) is met without a sleep: look for up to `SPIN`
        // first, without the handshake's cost for each look (a plain
        // `poll` that does not wait).
        let fd = self.fd.as_fd();
        spin::until(Instant::now() + SPIN, || {
            poll::readable_now(&[fd])
                .ok()?
                .first()
                .copied()?
                .then_some(())
        });
        loop {
            if let Some(connection) = self.try_accept()? {
                return Ok(connection);
            }
            let [ready] = poll::readable([self.fd.as_fd()], until)?;
            if !ready {
                return Err(Error::Timeout(timeout));
            }
        }
    }

    /// One client if one is waiting: `Ok(None)` when none is, or when the
    /// one that was did not get through (it is dropped).
    pub(super) fn try_accept<S, R>(&self) -> Result<Option<Connection<S, R>>> {
        let fd = loop {
            // SAFETY: `accept4` on our listening socket, with no address
            // buffer; it returns a new descriptor or -1.
            let fd = unsafe {
                libc::accept4(
                    self.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            match Errno::result(fd) {
                // SAFETY: the kernel just made this descriptor for us.
                Ok(fd) => break unsafe { OwnedFd::from_raw_fd(fd) },
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                Err(Errno::EAGAIN) => return Ok(None),
                Err(e) => return Err(Error::os("accept", e)),
            }
        };
        let until = Instant::now() + self.handshake_timeout.min(Duration::from_secs(3600));
        let admitted = same_user(fd.as_fd())
            .and_then(|()| auth::serve(fd.as_fd(), self.key.as_deref(), until));
        match admitted {
            Ok(()) => Ok(Some(Connection::from_handshake(fd))),
            Err(e) => {
                log::debug!("mpcore: a client was refused: {e}");
                Ok(None)
            }
        }
    }
}

impl Client {
    /// Connects to the [`Listener`] named `name`, with no key (Python's
    /// `Client(address)`). It waits until the listener accepts.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when there is no such listener (`ENOENT`,
    /// `ECONNREFUSED`); [`Error::AuthenticationFailed`] when the listener
    /// belongs to another user or asks for a key.
    pub fn connect<S, R>(name: impl AsRef<OsStr>) -> Result<Connection<S, R>> {
        Client::make(name.as_ref().as_bytes(), None)
    }

    /// Connects to the [`Listener`] named `name`, proving that it knows
    /// `key` and asking the listener to prove the same (Python's
    /// `Client(address, authkey=key)`).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect), and
    /// [`Error::AuthenticationFailed`] when the keys differ.
    pub fn connect_with_authkey<S, R>(
        name: impl AsRef<OsStr>,
        key: &[u8],
    ) -> Result<Connection<S, R>> {
        Client::make(name.as_ref().as_bytes(), Some(key))
    }

    fn make<S, R>(name: &[u8], key: Option<&[u8]>) -> Result<Connection<S, R>> {
        let addr = address(name)?;
        let fd = seqpacket(SockFlag::empty())?;
        loop {
            match connect(fd.as_raw_fd(), &addr) {
                Ok(()) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::os("connect", e)),
            }
        }
        same_user(fd.as_fd())?;
        auth::greet(fd.as_fd(), key, Instant::now() + HANDSHAKE_TIMEOUT)?;
        Ok(Connection::from_handshake(fd))
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("name", &self.name())
            .field("authkey", &self.key.is_some())
            .finish()
    }
}

impl Drop for Listener {
    /// Removes the socket file, if this process made it and it is still
    /// the one it made.
    fn drop(&mut self) {
        if let Some((path, dev, ino)) = &self.file {
            let ours = std::fs::symlink_metadata(path)
                .is_ok_and(|meta| meta.dev() == *dev && meta.ino() == *ino);
            if ours && getpid() == self.owner {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
