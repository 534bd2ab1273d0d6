//! A proxy's side: its connection to the manager's server, a request and
//! its reply, and how a proxy travels to a spawned child.
//!
//! Every process talks to the server on connections of its own, never on
//! one another process also uses: a connection is a socket pair whose
//! one end the client sends the server over the door (`SCM_RIGHTS`).
//! The connections this process is not using wait in [`Client::idle`],
//! each marked with the pid that made it: one inherited by a forked child
//! is closed there, and the child connects anew. A request holds its
//! connection alone from the send to the reply, so two threads of one
//! process never interleave either; the list is only ever `try_lock`ed,
//! so that a child forked while another thread held it connects anew
//! instead of waiting for ever.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::sockopt::ReceiveTimeout;
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg, setsockopt};
use nix::sys::time::TimeVal;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::protocol::{Bytes, Reply, Request};
use crate::base::{Error, Result, catch};
use crate::os::{deadline, poll, spin};
use crate::wire::{channel, codec, handles};

/// How often a call that waits with no timeout looks whether the server
/// is gone, beside its connection's end.
const CHECK_EVERY: libc::timeval = libc::timeval {
    tv_sec: 1,
    tv_usec: 0,
};

/// The most idle connections a process keeps per client.
const IDLE_MAX: usize = 8;

/// How long a call looks for its reply before it sleeps
/// (`Client::wait`): about a round trip between two
/// running processes, far less than a sleep and two wake-ups.
const LOOK_FOR_REPLY: Duration = Duration::from_micros(50);

/// One process's way to the server: the door, and the connections made.
pub(super) struct Client {
    door: OwnedFd,
    idle: Mutex<Vec<Conn>>,
}

/// A connection, and the process that made it.
struct Conn {
    pid: u32,
    fd: OwnedFd,
}

impl Client {
    pub(super) fn new(door: OwnedFd) -> Arc<Client> {
        Arc::new(Client {
            door,
            idle: Mutex::new(Vec::new()),
        })
    }

    pub(super) fn door(&self) -> BorrowedFd<'_> {
        self.door.as_fd()
    }

    /// Sends `request` and waits for its reply, at most `timeout`. A
    /// [`Reply::Failed`] comes back as its error.
    pub(super) fn call(&self, request: &Request, timeout: Option<Duration>) -> Result<Reply> {
        let bytes = codec::encode(request)?;
        let conn = self.take()?;
        channel::send_bytes(conn.fd.as_fd(), &bytes).map_err(lost)?;
        // On an error the connection is dropped, not given back.
        let reply = match timeout {
            None => self.wait(&conn)?,
            Some(timeout) => self.wait_until(&conn, timeout)?,
        };
        self.give_back(conn);
        match reply {
            Reply::Failed(failure) => Err(failure.into_error()),
            reply => Ok(reply),
        }
    }

    /// Waits for the reply on `conn`: one `recvmsg`, which the socket's
    /// receive timeout ([`CHECK_EVERY`]) ends now and then, to look
    /// whether the server's end of the door is closed. (The end of the
    /// connection says so at once, unless another process holds a copy of
    /// its far end: one forked by another thread of this one at the
    /// instant the connection was made.)
    ///
    /// The server answers within microseconds when its thread for this
    /// connection runs, so the reply is looked for first, for up to
    /// [`LOOK_FOR_REPLY`], yielding the core between looks: a sleep and a
    /// wake-up cost more than the call itself.
    fn wait(&self, conn: &Conn) -> Result<Reply> {
        let soon = spin::until_yielding(Instant::now() + LOOK_FOR_REPLY, || {
            channel::try_recv::<Reply>(conn.fd.as_fd()).transpose()
        });
        if let Some(reply) = soon {
            return reply.map_err(lost);
        }
        loop {
            match channel::recv_within_timeout::<Reply>(conn.fd.as_fd()) {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => {
                    if poll::readable_now(&[self.door.as_fd()])?[0] {
                        return Err(Error::ManagerLost);
                    }
                }
                Err(e) => return Err(lost(e)),
            }
        }
    }

    /// Waits for the reply on `conn` for at most `timeout`. After a
    /// timeout the connection is dropped by the caller, with the reply
    /// that may still come, so that no later request reads it as its own.
    fn wait_until(&self, conn: &Conn, timeout: Duration) -> Result<Reply> {
        let deadline = deadline::after(timeout);
        loop {
            let [answered, door_closed] =
                poll::readable([conn.fd.as_fd(), self.door.as_fd()], deadline)?;
            if answered {
                match channel::try_recv::<Reply>(conn.fd.as_fd()) {
                    Ok(Some(reply)) => return Ok(reply),
                    Ok(None) => continue,
                    Err(e) => return Err(lost(e)),
                }
            }
            // The server's end of the door is closed: it is gone, even if
            // some other process still holds our connection's other end.
            if door_closed {
                return Err(Error::ManagerLost);
            }
            return Err(Error::Timeout(timeout));
        }
    }

    /// An idle connection of this process, or a new one.
    fn take(&self) -> Result<Conn> {
        let pid = std::process::id();
        if let Ok(mut idle) = self.idle.try_lock() {
            while let Some(conn) = idle.pop() {
                if conn.pid == pid {
                    return Ok(conn);
                }
                // Inherited from the process that forked this one: ours
                // is only a copy, closed here; that process keeps it.
            }
        }
        self.connect(pid)
    }

    fn give_back(&self, conn: Conn) {
        if let Ok(mut idle) = self.idle.try_lock() {
            if idle.len() < IDLE_MAX {
                idle.push(conn);
            }
        }
    }

    /// A new connection: one end of a new pair goes to the server.
    fn connect(&self, pid: u32) -> Result<Conn> {
        let (ours, theirs) = channel::pair()?;
        let fds = [theirs.as_raw_fd()];
        loop {
            match sendmsg::<()>(
                self.door.as_raw_fd(),
                &[IoSlice::new(&[1])],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE | Errno::ECONNRESET | Errno::ECONNREFUSED) => {
                    return Err(Error::ManagerLost);
                }
                Err(e) => return Err(Error::os("sendmsg", e)),
            }
        }
        // The receive timeout that ends a wait now and then (`wait`).
        setsockopt(&ours, ReceiveTimeout, &TimeVal::from(CHECK_EVERY))
            .map_err(|e| Error::os("setsockopt", e))?;
        Ok(Conn { pid, fd: ours })
    }
}

/// A connection that ended is a server that is gone.
fn lost(e: Error) -> Error {
    match e {
        Error::Disconnected => Error::ManagerLost,
        e => e,
    }
}

/// What every proxy holds: the client, the object's id on the server, and
/// the timeout of its calls.
#[derive(Clone)]
pub(super) struct Remote {
    pub(super) client: Arc<Client>,
    pub(super) id: u64,
    pub(super) timeout: Option<Duration>,
}

/// How a proxy is named in errors about where it may travel.
const WHAT: &str = "manager proxy";

impl Remote {
    pub(super) fn call(&self, request: &Request) -> Result<Reply> {
        self.client.call(request, self.timeout)
    }

    pub(super) fn with_timeout(&self, timeout: Duration) -> Remote {
        Remote {
            timeout: Some(timeout),
            ..self.clone()
        }
    }

    /// Writes the proxy as its door (a descriptor) and its id: only in a
    /// spawned child's argument, as the other handles.
    pub(super) fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        handles::serialize(serializer, WHAT, self.client.door(), self.id)
    }

    /// Reads a proxy that [`Remote::serialize`] wrote: a client of its own.
    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Remote, D::Error> {
        let (door, id) = handles::deserialize(deserializer, WHAT)?;
        Ok(Remote {
            client: Client::new(door),
            id,
            timeout: None,
        })
    }
}

/// `value`'s encoding, checked to read back; a `Serialize` that panics
/// fails this call alone.
pub(super) fn encode<T: Serialize + DeserializeOwned>(value: &T) -> Result<Bytes> {
    catch(|| {
        let mut bytes = Vec::new();
        codec::encode_checked_into(&mut bytes, value).map(|()| bytes)
    })
    .unwrap_or_else(|message| {
        Err(Error::Codec {
            action: "encode",
            reason: format!("the value panicked while it was being serialized: {message}"),
        })
    })
}

/// Reads a value the server sent back.
pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    catch(|| codec::decode(bytes)).unwrap_or_else(|message| {
        Err(Error::Codec {
            action: "decode",
            reason: format!("the value panicked while it was being deserialized: {message}"),
        })
    })
}

/// The error for a reply of another kind than the request asks for.
pub(super) fn unexpected(reply: Reply) -> Error {
    Error::Codec {
        action: "decode",
        reason: format!("the manager answered with an unexpected reply: {reply:?}"),
    }
}

/// The value a reply carries.
pub(super) fn value<T: DeserializeOwned>(reply: Reply) -> Result<Option<T>> {
    match reply {
        Reply::Value(bytes) => bytes.as_deref().map(decode).transpose(),
        reply => Err(unexpected(reply)),
    }
}

/// The values a reply carries.
pub(super) fn many<T: DeserializeOwned>(reply: Reply) -> Result<Vec<T>> {
    match reply {
        Reply::Many(items) => items.iter().map(|bytes| decode(bytes)).collect(),
        reply => Err(unexpected(reply)),
    }
}

/// Checks that a reply says "done".
pub(super) fn done(reply: Reply) -> Result<()> {
    match reply {
        Reply::Done => Ok(()),
        reply => Err(unexpected(reply)),
    }
}

/// The length a reply carries.
pub(super) fn len(reply: Reply) -> Result<usize> {
    match reply {
        Reply::Len(len) => Ok(len as usize),
        reply => Err(unexpected(reply)),
    }
}
