//! A task that travels to a fresh run of the program (a spawned child, or
//! a child of the fork server): where its function is, its encoded
//! argument, and the descriptors of the handles in that argument.
//!
//! A function's address changes from run to run (ASLR), but not its
//! distance from another function of the same executable: the parent
//! sends offsets from an anchor ([`anchor`]), and the child adds them to
//! its own anchor. The task is reached through an entry,
//! [`run_task::<A, R>`](run_task), instantiated for the argument and
//! result types, as the pool's `run_chunk::<T, R>` is.
//!
//! The child trusts neither offset blindly: the entry must be one that
//! mpcore registered (each instantiation of `run_task` puts its address in
//! the table of entries, `image.rs`), and the function must lie in the code
//! of the image that holds mpcore. Which `fn(A) -> R` of that code the
//! entry calls is the parent's word: a process of the same user that
//! started this one (`hook.rs` checks that before any packet is read).

use std::io::{IoSlice, IoSliceMut};
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, MsgFlags, recvmsg, sendmsg};
use nix::unistd::Pid;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::child::{Outcome, child_main};
use super::identity::{self, Identity};
use super::image::{self, register_entry};
use crate::base::{Error, Result, catch};
use crate::os::fds;
use crate::wire::{channel, codec, handles};

/// The most descriptors one `SCM_RIGHTS` message carries (the kernel's
/// `SCM_MAX_FD`): the most handles one argument may hold.
const MAX_HANDLES: usize = 253;

/// Where the task is (its entry and its function), as offsets from [`anchor`], and how many handle
/// descriptors came with this packet.
#[derive(Serialize, Deserialize)]
struct Entry {
    entry: u64,
    function: u64,
    /// The anchor's distance from the start of its image: the same in
    /// parent and child when both run the same file.
    anchor_in_image: Option<u64>,
    handles: u32,
}

/// A task entry's type: the task's address, the encoded argument, the
/// handles' descriptors, the result socket and the parent's pid.
type TaskEntry = for<'a> fn(usize, Vec<u8>, Vec<OwnedFd>, BorrowedFd<'a>, Pid) -> i32;

/// The address every offset is taken from: a function of mpcore's own,
/// in the same image as every function a task may name.
#[inline(never)]
fn anchor_fn() {}

/// The address every offset is taken from.
fn anchor() -> usize {
    anchor_fn as fn() as usize
}

/// The start of the loaded image (executable or shared library) that
/// holds `address`, as the dynamic loader knows it; `None` if it does not
/// (a static executable without that information).
fn image_base(address: usize) -> Option<usize> {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    // SAFETY: `dladdr` only reads the loader's tables and writes `info`,
    // which is ours and large enough; it accepts any address.
    let found = unsafe { libc::dladdr(address as *const libc::c_void, info.as_mut_ptr()) };
    // SAFETY: zero-initialised, and filled in by `dladdr` when it succeeds.
    let info = unsafe { info.assume_init() };
    (found != 0 && !info.dli_fbase.is_null()).then_some(info.dli_fbase as usize)
}

/// A task ready to send: where it is, and its encoded argument with the
/// descriptors of the handles in it, borrowed from the argument (hence
/// the lifetime: the argument must outlive the sending).
pub(crate) struct Task<'arg> {
    entry: usize,
    function: usize,
    arg: Vec<u8>,
    /// Who the child is ([`Identity`]), encoded: a third packet.
    identity: Vec<u8>,
    fds: Vec<RawFd>,
    _handles: PhantomData<&'arg ()>,
}

impl<'arg> Task<'arg> {
    /// Encodes `arg` for `f`, in a child that is to be `identity`.
    pub(crate) fn new<A, R>(f: fn(A) -> R, arg: &'arg A, identity: &Identity) -> Result<Task<'arg>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let (encoded, fds) = handles::collect(|| codec::encode(arg));
        Ok(Task {
            entry: run_task::<A, R> as TaskEntry as usize,
            function: f as usize,
            arg: encoded?,
            identity: codec::encode(identity)?,
            fds,
            _handles: PhantomData,
        })
    }

    /// A connected pair of sockets whose second end already holds the three
    /// packets a child reads before its task ([`run_sent_task`]). The child
    /// gets the second end; the first is the parent's end of the result
    /// socket.
    pub(crate) fn packed(&self) -> Result<(OwnedFd, OwnedFd)> {
        let (entry, function, fds) = (self.entry, self.function, &self.fds[..]);
        let anchor = anchor();
        let base = image_base(anchor);
        if image_base(entry) != base || image_base(function) != base {
            return Err(Error::InvalidArgument(
                "spawn_fn under StartMethod::Spawn or ForkServer needs a function of the image \
                 that holds mpcore (the program itself, or the library that holds mpcore when the \
                 program loads it at start-up), not one from another shared library: its address \
                 would mean nothing in the new child",
            ));
        }
        if fds.len() > MAX_HANDLES {
            return Err(Error::InvalidArgument(
                "a spawned process's argument may hold at most 253 handles \
                 (Queue, Value, Array, Lock, Event): pass fewer, e.g. one Array instead of many Values",
            ));
        }
        let entry = Entry {
            entry: offset_of(entry),
            function: offset_of(function),
            anchor_in_image: base.map(|base| (anchor - base) as u64),
            handles: fds.len() as u32,
        };

        let (ours, theirs) = channel::pair()?;
        // The packets wait in the child's end of the socket until it reads
        // them; the descriptors in flight stay open until then.
        let header = codec::encode(&entry)?;
        let rights = [ControlMessage::ScmRights(fds)];
        let control: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
        sendmsg::<()>(
            ours.as_raw_fd(),
            &[IoSlice::new(&header)],
            control,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(|e| Error::os("sendmsg", e))?;
        channel::send_bytes(ours.as_fd(), &self.arg)?;
        channel::send_bytes(ours.as_fd(), &self.identity)?;
        Ok((ours, theirs))
    }
}

/// A task read from its socket, checked, ready to run.
pub(crate) struct SentTask {
    entry: TaskEntry,
    function: usize,
    arg: Vec<u8>,
    fds: Vec<OwnedFd>,
    identity: Identity,
}

/// Why a task that was sent does not run.
pub(crate) enum Refused {
    /// What came is no task that mpcore made for this program: no packet,
    /// a malformed one, another program's, an entry that mpcore did not
    /// register, a function outside the program's code.
    NotATask(String),
    /// A task, but this process could not take it: its descriptors did not
    /// fit in its table, or the socket failed.
    CannotTake(String),
}

impl Refused {
    /// What the parent is told.
    pub(crate) fn message(&self) -> &str {
        match self {
            Refused::NotATask(message) | Refused::CannotTake(message) => message,
        }
    }
}

/// Reads the three packets a [`Task`] left in `tx`, and checks where they
/// say the task is.
pub(crate) fn receive_task(tx: BorrowedFd<'_>) -> Result<SentTask, Refused> {
    let (entry, fds) = receive_entry(tx)?;
    let arg = match channel::recv_bytes(tx) {
        Ok(arg) => arg,
        Err(Error::Disconnected) => {
            return Err(Refused::NotATask(
                "no argument came with its task".to_owned(),
            ));
        }
        Err(e) => {
            return Err(Refused::CannotTake(format!(
                "could not read its argument: {e}"
            )));
        }
    };
    let identity = match channel::recv_bytes(tx).map(|bytes| codec::decode::<Identity>(&bytes)) {
        Ok(Ok(identity)) => identity,
        Ok(Err(_)) | Err(Error::Disconnected) => {
            return Err(Refused::NotATask(
                "no identity (name, start method) came with its task".to_owned(),
            ));
        }
        Err(e) => {
            return Err(Refused::CannotTake(format!(
                "could not read its identity: {e}"
            )));
        }
    };
    let anchor = anchor();
    if entry.anchor_in_image != image_base(anchor).map(|base| (anchor - base) as u64) {
        return Err(Refused::NotATask(
            "it is not the same program as its parent (the executable differs)".to_owned(),
        ));
    }
    let function = address_at(entry.function);
    let entry = address_at(entry.entry);
    if !image::is_entry(entry) {
        return Err(Refused::NotATask(
            "what it was sent is no task entry of this program".to_owned(),
        ));
    }
    if !image::in_mpcore_code(function) {
        return Err(Refused::NotATask(
            "the function it was sent is not in this program's code".to_owned(),
        ));
    }
    // SAFETY: `entry` is the start of a function that mpcore registered
    // as a task entry (`is_entry`): an instantiation of `run_task`, all of
    // which have the type `TaskEntry`.
    let entry = unsafe { std::mem::transmute::<*const (), TaskEntry>(entry as *const ()) };
    Ok(SentTask {
        entry,
        function,
        arg,
        fds,
        identity,
    })
}

impl SentTask {
    /// Runs the task; `parent` is the process it must die with. Returns
    /// the exit code.
    pub(crate) fn run(self, tx: BorrowedFd<'_>, parent: Pid) -> i32 {
        identity::record(self.identity);
        (self.entry)(self.function, self.arg, self.fds, tx, parent)
    }
}

/// Reads the three packets a [`Task`] left in `tx` and runs the task, in a
/// child of the fork server; `parent` is the process it must die with.
/// Returns the exit code; if there is no task to run, the parent is told
/// why.
pub(crate) fn run_sent_task(tx: BorrowedFd<'_>, parent: Pid) -> i32 {
    match receive_task(tx) {
        Ok(task) => task.run(tx, parent),
        Err(refused) => refuse(tx, &refused),
    }
}

/// Tells the parent why its task does not run; the exit code.
pub(crate) fn refuse(tx: BorrowedFd<'_>, refused: &Refused) -> i32 {
    fail(tx, refused.message().to_owned())
}

/// The first packet: the [`Entry`] and the handles' descriptors.
fn receive_entry(tx: BorrowedFd<'_>) -> Result<(Entry, Vec<OwnedFd>), Refused> {
    let mut buf = [0u8; 64];
    let mut space = nix::cmsg_space!([RawFd; MAX_HANDLES]);
    let (len, flags, fds) = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(
            tx.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            Err(e) => {
                let e = Error::os("recvmsg", e);
                return Err(Refused::CannotTake(format!(
                    "could not read where its task is: {e}"
                )));
            }
            Ok(msg) => {
                // Ours now, whatever else is wrong with the packet: closed
                // if it is refused. (When some did not fit, the kernel says
                // so with `MSG_CTRUNC`, and nix lists none of those that
                // did: they stay open, in a process that leaves at once.)
                let fds = fds::owned(&msg).unwrap_or_default();
                break (msg.bytes, msg.flags, fds);
            }
        }
    };
    if len == 0 && fds.is_empty() && !flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(Refused::NotATask("its parent sent no task".to_owned()));
    }
    let entry = match codec::decode::<Entry>(&buf[..len]) {
        Ok(entry) if !flags.contains(MsgFlags::MSG_TRUNC) => entry,
        _ => return Err(Refused::NotATask("what came is not a task".to_owned())),
    };
    if flags.contains(MsgFlags::MSG_CTRUNC) {
        // The kernel could not install every descriptor: it drops those
        // that find no free number in the table.
        return Err(Refused::CannotTake(format!(
            "too many open files: it could not receive the {} descriptors of the handles in its \
             argument (Queue, Value, Array, Lock, Event), because its open-file limit (ulimit -n, \
             RLIMIT_NOFILE) was reached; raise the limit, or pass fewer handles",
            entry.handles
        )));
    }
    if fds.len() != entry.handles as usize {
        return Err(Refused::NotATask(
            "its task came with another number of descriptors than it names".to_owned(),
        ));
    }
    Ok((entry, fds))
}

/// Tells the parent why the task could not start; the exit code.
fn fail(tx: BorrowedFd<'_>, message: String) -> i32 {
    let _ = channel::send(tx, &Outcome::<()>::Failed(message));
    1
}

/// Decodes the argument (its handles mapping the descriptors that came
/// with it), then runs `f` as a forked child runs its closure.
fn run_task<A, R>(
    function: usize,
    arg: Vec<u8>,
    fds: Vec<OwnedFd>,
    tx: BorrowedFd<'_>,
    parent: Pid,
) -> i32
where
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    register_entry!(run_task::<A, R>);
    // SAFETY: the parent took `function` from a `fn(A) -> R` and sent it
    // along with this very instantiation of `run_task`, in the same
    // executable (`receive_task` checked that it lies in its code); fn
    // pointers are plain code addresses. The parent is a process of our
    // user that started this one (`hook.rs`), or the fork server's
    // requester: its word is what this rests on.
    let f = unsafe { std::mem::transmute::<*const (), fn(A) -> R>(function as *const ()) };
    let arg = match catch(|| handles::provide(fds, || codec::decode::<A>(&arg))) {
        Ok((Ok(arg), _)) => arg,
        Ok((Err(_), Some(why))) => return fail(tx, format!("could not read its argument: {why}")),
        Ok((Err(e), None)) => return fail(tx, format!("could not read its argument: {e}")),
        Err(panic) => return fail(tx, format!("reading its argument panicked: {panic}")),
    };
    child_main(move || f(arg), tx, parent)
}

/// Where the function at `address` is, as a number that means the same
/// function in a fork of this process and, for a function in the
/// anchor's image ([`in_anchor_image`]), in a fresh run of the program:
/// its distance from the anchor.
pub(crate) fn offset_of(address: usize) -> u64 {
    address.wrapping_sub(anchor()) as u64
}

/// The address in this process of the function [`offset_of`] described.
pub(crate) fn address_at(offset: u64) -> usize {
    anchor().wrapping_add(offset as usize)
}

/// Whether the function at `address` lies in the same image as the
/// anchor: only then is its distance from the anchor the same in a fresh
/// run of the program.
pub(crate) fn in_anchor_image(address: usize) -> bool {
    image_base(address) == image_base(anchor())
}
