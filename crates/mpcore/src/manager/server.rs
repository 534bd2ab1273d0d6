//! The manager's server: a thread per client connection, and one lock
//! over the objects, held while a request runs. A request runs whole
//! before the next one does, so every request, an update included, is
//! atomic; the reading and decoding of requests, the encoding and sending
//! of replies, run beside one another outside the lock. (One thread
//! polling every connection, serving one request at a time, was measured
//! against this: with eight clients on two cores it served from a half to
//! two thirds as many increments a second.)
//!
//! The door is a socket on which clients send the server one end of a new
//! socket pair each (`SCM_RIGHTS`): their connection. A connection whose
//! client is gone (end of file, or a reply it does not take) is closed
//! with its thread; the others never notice.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit, setrlimit};

use super::protocol::{Bytes, Call, Failure, Reply, Request, resolve_sort, resolve_update};
use crate::base::Error;
use crate::os::{fds, spin};
use crate::wire::handles::Descriptor;
use crate::wire::{channel, codec};

/// One object the manager holds.
enum Object {
    /// Keys in the order of their encodings.
    Dict(BTreeMap<Bytes, Bytes>),
    List(Vec<Bytes>),
    Namespace(Bytes),
}

/// The server's state: the objects (an id is an index) and the update
/// functions already checked.
#[derive(Default)]
struct Store {
    objects: Vec<Object>,
    known: Vec<(u64, u64)>,
}

/// The server process's task: serves the door's clients until the
/// process is killed (by its owner's drop, or with its owner), or until
/// every holder of the door and every client is gone.
pub(super) fn serve(door: Descriptor) {
    // One descriptor per connection: take all the room this process may.
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    let door = door.0;
    let store = Arc::new(Mutex::new(Store::default()));
    let mut threads = Vec::new();
    loop {
        match accept(door.as_fd()) {
            Accepted::Client(conn) => {
                let store = store.clone();
                if let Ok(thread) =
                    std::thread::Builder::new().spawn(move || serve_connection(conn, &store))
                {
                    threads.push(thread);
                }
                // A thread that cannot start drops the connection: its
                // client sees the end of it.
                threads.retain(|t: &JoinHandle<()>| !t.is_finished());
            }
            Accepted::Nothing => {}
            // Every holder of the door is gone: no client can come any
            // more, and those connected are served to their end.
            Accepted::DoorClosed => break,
        }
    }
    // Closed first: a client that connects from now on is told at once.
    drop(door);
    for thread in threads {
        let _ = thread.join();
    }
}

/// How long a connection's thread looks for the next request after a
/// reply, before it sleeps: a client in a loop of calls sends it within
/// a few microseconds.
const LOOK_FOR_REQUEST: Duration = Duration::from_micros(50);
/// After a look that found nothing, how many requests go straight to
/// sleep (doubling up to [`MAX_SKIP`]).
const FIRST_SKIP: u32 = 4;
const MAX_SKIP: u32 = 256;

/// One connection's thread: a request, the store locked while it runs,
/// its reply; until the client is gone.
///
/// A client that calls again at once (a loop of calls) finds its request
/// looked for: up to [`LOOK_FOR_REQUEST`] after each reply, yielding the
/// core between looks. A look that finds nothing makes the next ones
/// rarer (4, 8, ... up to 256 requests go straight to sleep), so the
/// threads of idle or slow clients do not spin.
fn serve_connection(conn: OwnedFd, store: &Mutex<Store>) {
    let (mut skip, mut next_skip) = (0u32, FIRST_SKIP);
    loop {
        let soon = if skip > 0 {
            skip -= 1;
            None
        } else {
            let found = spin::until_yielding(Instant::now() + LOOK_FOR_REQUEST, || {
                channel::try_recv::<Request>(conn.as_fd()).transpose()
            });
            match found {
                Some(_) => next_skip = FIRST_SKIP,
                None => {
                    skip = next_skip;
                    next_skip = (next_skip * 2).min(MAX_SKIP);
                }
            }
            found
        };
        let received = match soon {
            Some(request) => request.map(Some),
            None => channel::recv_within_timeout::<Request>(conn.as_fd()),
        };
        let reply = match received {
            Ok(Some(request)) => store
                .lock()
                // A panic under the lock is caught where it can happen
                // (the trampolines): the store is whole.
                .unwrap_or_else(PoisonError::into_inner)
                .apply(request),
            Ok(None) => continue,
            Err(Error::Disconnected) => return,
            Err(e) => Reply::Failed(Failure::BadRequest(e.to_string())),
        };
        // A client has one request in flight and waits for its reply, so
        // there is always room; one that does not read is dropped, never
        // waited for.
        let sent = codec::encode(&reply)
            .and_then(|bytes| channel::try_send_bytes(conn.as_fd(), &bytes))
            .unwrap_or(false);
        if !sent {
            return;
        }
    }
}

enum Accepted {
    Client(OwnedFd),
    Nothing,
    DoorClosed,
}

/// Takes one new connection from the door.
fn accept(door: BorrowedFd<'_>) -> Accepted {
    let mut buf = [0u8; 8];
    match fds::recv_with_fds::<1>(door, &mut buf) {
        Ok((0, fds)) if fds.is_empty() => Accepted::DoorClosed,
        // No descriptor: there was no room for it (EMFILE), and the kernel
        // closed it, so its client sees the end of its connection.
        Ok((_, fds)) => fds
            .into_iter()
            .next()
            .map_or(Accepted::Nothing, Accepted::Client),
        // The door itself failed (nothing that passes): take no more
        // clients, so that none waits on a door nobody reads.
        Err(_) => Accepted::DoorClosed,
    }
}

impl Store {
    fn apply(&mut self, request: Request) -> Reply {
        match self.run(request) {
            Ok(reply) => reply,
            Err(failure) => Reply::Failed(failure),
        }
    }

    fn add(&mut self, object: Object) -> Reply {
        self.objects.push(object);
        Reply::Id(self.objects.len() as u64 - 1)
    }

    fn dict(&mut self, id: u64) -> Result<&mut BTreeMap<Bytes, Bytes>, Failure> {
        match self.objects.get_mut(id as usize) {
            Some(Object::Dict(dict)) => Ok(dict),
            _ => Err(Failure::NoSuchObject),
        }
    }

    fn list(&mut self, id: u64) -> Result<&mut Vec<Bytes>, Failure> {
        match self.objects.get_mut(id as usize) {
            Some(Object::List(list)) => Ok(list),
            _ => Err(Failure::NoSuchObject),
        }
    }

    fn namespace(&mut self, id: u64) -> Result<&mut Bytes, Failure> {
        match self.objects.get_mut(id as usize) {
            Some(Object::Namespace(value)) => Ok(value),
            _ => Err(Failure::NoSuchObject),
        }
    }

    fn run(&mut self, request: Request) -> Result<Reply, Failure> {
        use Request as R;
        Ok(match request {
            R::NewDict => self.add(Object::Dict(BTreeMap::new())),
            R::NewList(items) => self.add(Object::List(items)),
            R::NewNamespace(value) => self.add(Object::Namespace(value)),
            R::Len(id) => Reply::Len(match self.objects.get(id as usize) {
                Some(Object::Dict(dict)) => dict.len(),
                Some(Object::List(list)) => list.len(),
                _ => return Err(Failure::NoSuchObject),
            } as u64),
            R::Clear(id) => {
                match self.objects.get_mut(id as usize) {
                    Some(Object::Dict(dict)) => dict.clear(),
                    Some(Object::List(list)) => list.clear(),
                    _ => return Err(Failure::NoSuchObject),
                }
                Reply::Done
            }
            R::Insert(id, key, value) => Reply::Value(self.dict(id)?.insert(key, value)),
            R::Get(id, key) => Reply::Value(self.dict(id)?.get(&key).cloned()),
            R::Remove(id, key) => Reply::Value(self.dict(id)?.remove(&key)),
            R::ContainsKey(id, key) => Reply::Bool(self.dict(id)?.contains_key(&key)),
            R::Keys(id) => Reply::Many(self.dict(id)?.keys().cloned().collect()),
            R::Values(id) => Reply::Many(self.dict(id)?.values().cloned().collect()),
            R::Items(id) => Reply::Pairs(
                self.dict(id)?
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            R::Update(id, pairs) => {
                self.dict(id)?.extend(pairs);
                Reply::Done
            }
            R::UpdateWith(id, key, call) => {
                let (trampoline, f) = self.resolve(call)?;
                let dict = self.dict(id)?;
                let new = trampoline(f, dict.get(&key).map(Vec::as_slice))?;
                match &new {
                    Some(value) => dict.insert(key, value.clone()),
                    None => dict.remove(&key),
                };
                Reply::Value(new)
            }
            R::Push(id, item) => {
                self.list(id)?.push(item);
                Reply::Done
            }
            R::Pop(id) => Reply::Value(self.list(id)?.pop()),
            R::ListGet(id, index) => {
                let list = self.list(id)?;
                Reply::Value(Some(list[in_range(index, list.len())?].clone()))
            }
            R::ListSet(id, index, item) => {
                let list = self.list(id)?;
                let i = in_range(index, list.len())?;
                Reply::Value(Some(std::mem::replace(&mut list[i], item)))
            }
            R::ListInsert(id, index, item) => {
                let list = self.list(id)?;
                let i = (index as usize).min(list.len());
                list.insert(i, item);
                Reply::Done
            }
            R::ListRemove(id, index) => {
                let list = self.list(id)?;
                let i = in_range(index, list.len())?;
                Reply::Value(Some(list.remove(i)))
            }
            R::Extend(id, items) => {
                self.list(id)?.extend(items);
                Reply::Done
            }
            R::Reverse(id) => {
                self.list(id)?.reverse();
                Reply::Done
            }
            R::Sort(id, trampoline) => {
                let sort = resolve_sort(trampoline).ok_or(Failure::BadFunction)?;
                sort(self.list(id)?)?;
                Reply::Done
            }
            R::Snapshot(id) => Reply::Many(self.list(id)?.clone()),
            R::ListUpdate(id, index, call) => {
                let (trampoline, f) = self.resolve(call)?;
                let list = self.list(id)?;
                let i = in_range(index, list.len())?;
                let new = trampoline(f, Some(&list[i]))?.ok_or(Failure::NoSuchObject)?;
                list[i] = new.clone();
                Reply::Value(Some(new))
            }
            R::NsGet(id) => Reply::Value(Some(self.namespace(id)?.clone())),
            R::NsSet(id, value) => {
                Reply::Value(Some(std::mem::replace(self.namespace(id)?, value)))
            }
            R::NsUpdate(id, call) => {
                let (trampoline, f) = self.resolve(call)?;
                let value = self.namespace(id)?;
                let new = trampoline(f, Some(value))?.ok_or(Failure::NoSuchObject)?;
                *value = new.clone();
                Reply::Value(Some(new))
            }
        })
    }

    fn resolve(&mut self, call: Call) -> Result<(super::protocol::UpdateFn, usize), Failure> {
        resolve_update(call, &mut self.known).ok_or(Failure::BadFunction)
    }
}

/// `index` as a position in a list of `len` items.
fn in_range(index: u64, len: usize) -> Result<usize, Failure> {
    if index < len as u64 {
        Ok(index as usize)
    } else {
        Err(Failure::IndexOutOfRange {
            index,
            len: len as u64,
        })
    }
}
