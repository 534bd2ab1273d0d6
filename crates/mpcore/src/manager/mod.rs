//! [`Manager`]: Python's `multiprocessing.Manager()`, a server process
//! that holds a dict, a list or a value for many processes, and the
//! typed proxies through which they use it. Above `process/`, which
//! starts the server.
//!
//! - `mod.rs` (this file): the [`Manager`], which starts and ends the
//!   server;
//! - `protocol.rs`: the requests and replies, and the trampolines that
//!   run a type's `Ord` or a caller's update in the server;
//! - `server.rs`: the server (a thread per connection) and the objects
//!   it holds;
//! - `client.rs`: a process's connections to the server, one call, and
//!   how a proxy travels to a spawned child;
//! - `dict.rs`, `list.rs`, `namespace.rs`: the typed proxies.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

mod client;
mod dict;
mod list;
mod namespace;
mod protocol;
mod server;

pub use dict::Dict;
pub use list::List;
pub use namespace::Namespace;

use crate::base::{Result, StartMethod, get_start_method};
use crate::process::{Builder, Process};
use crate::wire::channel;
use crate::wire::handles::Descriptor;
use client::{Client, Remote, encode};
use protocol::{Reply, Request};

/// A server process that holds dicts, lists and values for every process
/// that has a proxy of them (Python's `multiprocessing.Manager()`).
///
/// Starting one starts the server, by the program's start method (or the
/// one given to [`Manager::with_start_method`]). The proxies it makes,
/// [`Dict`], [`List`] and [`Namespace`], are `Clone`, `Send` and `Sync`;
/// each call is one request to the server and its reply. A proxy goes to
/// a child as the other shared objects do: moved into a forked child's
/// closure, in a spawned child's argument
/// ([`process::Builder::spawn_fn`](crate::process::Builder::spawn_fn)),
/// or in a pool's [`initializer_fn`](crate::pool::Builder::initializer_fn)
/// argument. In each process it opens a connection of its own.
///
/// The server runs each request whole, under one lock: an update sent with
/// [`Dict::update_with`], [`List::update`] or [`Namespace::update`] is
/// atomic, where Python's `d[k] += 1` from two processes loses updates.
///
/// Dropping the `Manager` kills the server, and the server dies with the
/// process that started it (even one killed with `SIGKILL`): it never
/// outlives its owner. After that, and if the server is killed, every
/// proxy call fails with [`Error::ManagerLost`](crate::Error::ManagerLost).
/// The objects live as long as the server (Python frees one when its
/// last proxy goes).
///
/// ```
/// use mpcore::{Manager, Process};
///
/// let manager = Manager::new()?;
/// let results = manager.dict::<u32, String>()?;
/// let theirs = results.clone();
/// let mut child = Process::spawn(move || theirs.insert(1, "one".to_owned()).is_ok())?;
/// assert!(child.join()?);
/// assert_eq!(results.get(&1)?, Some("one".to_owned()));
/// # Ok::<(), mpcore::Error>(())
/// ```
pub struct Manager {
    client: Arc<Client>,
    server: Process<()>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Manager(server pid {})", self.server.pid())
    }
}

impl Manager {
    /// Starts a manager's server by the program's start method
    /// ([`get_start_method`](crate::get_start_method)).
    ///
    /// # Errors
    ///
    /// Those of starting a process ([`Process::spawn`],
    /// [`Builder::spawn_fn`]).
    pub fn new() -> Result<Manager> {
        Manager::with_start_method(get_start_method())
    }

    /// Starts a manager's server by `method` (Python's
    /// `get_context(method).Manager()`).
    ///
    /// # Errors
    ///
    /// As [`Manager::new`].
    pub fn with_start_method(method: StartMethod) -> Result<Manager> {
        // The door: clients send connections on `door`, the server takes
        // them from `theirs`.
        let (door, theirs) = channel::pair()?;
        let builder = Builder::new().name("mpcore-manager").start_method(method);
        let server = match method {
            StartMethod::Fork => {
                let inherited = door.as_raw_fd();
                builder.spawn(move || {
                    // SAFETY: in the forked server, `inherited` is its copy
                    // of the clients' end of the door, which the parent's
                    // stack frame owns; that frame never resumes here (the
                    // child leaves with `_exit`), so nothing else closes or
                    // uses it. Closed, it lets the server see when every
                    // client's copy is gone.
                    drop(unsafe { OwnedFd::from_raw_fd(inherited) });
                    server::serve(Descriptor(theirs));
                })?
            }
            _ => builder.spawn_fn(server::serve, Descriptor(theirs))?,
        };
        Ok(Manager {
            client: Client::new(door),
            server,
        })
    }

    /// The server process's id.
    pub fn pid(&self) -> i32 {
        self.server.pid()
    }

    fn create(&self, request: &Request) -> Result<Remote> {
        match self.client.call(request, None)? {
            Reply::Id(id) => Ok(Remote {
                client: self.client.clone(),
                id,
                timeout: None,
            }),
            reply => Err(client::unexpected(reply)),
        }
    }

    /// A new, empty dict in the manager (Python's `manager.dict()`).
    ///
    /// # Errors
    ///
    /// [`Error::ManagerLost`](crate::Error::ManagerLost) when the server is
    /// gone.
    pub fn dict<K, V>(&self) -> Result<Dict<K, V>>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        Ok(Dict::new(self.create(&Request::NewDict)?))
    }

    /// A new list in the manager holding `init` (Python's
    /// `manager.list(init)`).
    ///
    /// # Errors
    ///
    /// [`Error::Codec`](crate::Error::Codec) when an item cannot be
    /// encoded; [`Error::ManagerLost`](crate::Error::ManagerLost) when the
    /// server is gone.
    pub fn list<T>(&self, init: impl IntoIterator<Item = T>) -> Result<List<T>>
    where
        T: Serialize + DeserializeOwned,
    {
        let items = init
            .into_iter()
            .map(|item| encode(&item))
            .collect::<Result<Vec<_>>>()?;
        Ok(List::new(self.create(&Request::NewList(items))?))
    }

    /// A new value in the manager (Python's `manager.Namespace()`, as one
    /// typed value).
    ///
    /// # Errors
    ///
    /// As [`Manager::list`].
    pub fn namespace<T>(&self, init: T) -> Result<Namespace<T>>
    where
        T: Serialize + DeserializeOwned,
    {
        let request = Request::NewNamespace(encode(&init)?);
        Ok(Namespace::new(self.create(&request)?))
    }
}

impl Drop for Manager {
    /// Kills the server and reaps it (in the process that started it; a
    /// forked child's copy does nothing).
    fn drop(&mut self) {
        let _ = self.server.kill();
    }
}
