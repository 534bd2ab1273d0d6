//! The manager's server: one thread, one `poll` over the door and every
//! client's connection, one request at a time. A request runs whole
//! before the next is read, so every request, an update included, is
//! atomic with no lock at all.
//!
//! The door is a socket on which clients send the server one end of a new
//! socket pair each (`SCM_RIGHTS`): their connection. A connection whose
//! client is gone (end of file, or a reply it does not take) is closed;
//! the others never notice.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::resource::{Resource, getrlimit, setrlimit};

use super::protocol::{Bytes, Call, Failure, Reply, Request, resolve_sort, resolve_update};
use crate::base::Error;
use crate::os::{fds, poll};
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
/// process is killed (by its owner's drop, or with its owner).
pub(super) fn serve(door: Descriptor) {
    // One descriptor per connection: take all the room this process may.
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    let mut door = Some(door.0);
    let mut clients: Vec<OwnedFd> = Vec::new();
    let mut store = Store::default();
    // Once every holder of the door is gone no client can come any more:
    // the server ends when the last one connected has gone too.
    while door.is_some() || !clients.is_empty() {
        let ready = {
            let mut fds: Vec<BorrowedFd<'_>> = Vec::with_capacity(clients.len() + 1);
            fds.extend(clients.iter().map(|c| c.as_fd()));
            fds.extend(door.as_ref().map(|d| d.as_fd()));
            // Asleep until a request comes: a spin before sleeping was
            // measured to cost more than it saves on a shared machine.
            match poll::readable_any(&fds, None) {
                Ok(ready) => ready,
                // Nothing a poll can report here would pass by itself.
                Err(_) => return,
            }
        };
        let door_ready = door.is_some() && ready[clients.len()..].contains(&true);
        // Backwards, so that the indices still to come hold while some
        // connections close.
        for i in (0..clients.len()).rev() {
            if ready[i] && !serve_one(clients[i].as_fd(), &mut store) {
                clients.swap_remove(i);
            }
        }
        if door_ready {
            if let Some(open) = &door {
                match accept(open.as_fd()) {
                    Accepted::Client(fd) => clients.push(fd),
                    Accepted::Nothing => {}
                    Accepted::DoorClosed => door = None,
                }
            }
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
        Ok((_, fds)) => fds
            .into_iter()
            .next()
            .map_or(Accepted::Nothing, Accepted::Client),
        // No room for the descriptor (EMFILE): the kernel closed it, so its
        // client sees the end of its connection.
        Err(_) => Accepted::Nothing,
    }
}

/// Answers one request on `conn`; `false` when the connection is done.
fn serve_one(conn: BorrowedFd<'_>, store: &mut Store) -> bool {
    let reply = match channel::try_recv::<Request>(conn) {
        Ok(Some(request)) => store.apply(request),
        Ok(None) => return true,
        Err(Error::Disconnected) => return false,
        Err(e) => Reply::Failed(Failure::BadRequest(e.to_string())),
    };
    // A client has one request in flight and waits for its reply, so there
    // is always room; one that does not read is dropped, never waited for.
    codec::encode(&reply)
        .and_then(|bytes| channel::try_send_bytes(conn, &bytes))
        .unwrap_or(false)
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
