//! [`StartMethod::Spawn`](crate::StartMethod::Spawn): a child that is a
//! fresh `exec` of the same program, and how it finds its task instead of
//! `main`.
//!
//! The parent execs `/proc/self/exe`, which names the very file it runs
//! from even if that file has since been replaced or deleted, with one
//! environment variable set: the number of the child's end of the result
//! socket, and the parent's pid. Before anything else arrives on that
//! socket, the parent has already written two packets to it:
//!
//! 1. an [`Entry`]: where the task is, and the descriptors of the handles
//!    in the argument (`SCM_RIGHTS`);
//! 2. the encoded argument ([`channel::send_bytes`]).
//!
//! In the child, a constructor of mpcore's (a function in the ELF
//! `.init_array`, which the loader calls before `main`) sees the variable,
//! reads both packets, runs the task, sends its result as a forked child
//! does, and `_exit`s. So `main` never runs a second time, and no set-up is
//! asked of the program: the test harness's own `main` is skipped the same
//! way. A program that does not spawn has the variable unset, and the
//! constructor returns at once.
//!
//! A function's address changes from run to run (ASLR), but not its
//! distance from another function of the same executable: the parent
//! sends offsets from an anchor (the constructor itself), and the child
//! adds them to its own anchor. The task is reached through a trampoline,
//! [`run_task::<A, R>`](run_task), instantiated for the argument and
//! result types, as the pool's `run_chunk::<T, R>` is.

use std::ffi::OsStr;
use std::io::IoSlice;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use nix::unistd::{Pid, getpid};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::channel;
use crate::codec;
use crate::error::{Error, Result};
use crate::handles;
use crate::process::{self, Outcome};

/// The variable that tells a fresh run of the program that it is a spawned
/// child: `"<socket descriptor> <parent pid>"`.
const CHILD_ENV: &str = "MPCORE_SPAWNED_CHILD";

/// The most descriptors one `SCM_RIGHTS` message carries (the kernel's
/// `SCM_MAX_FD`): the most handles one argument may hold.
const MAX_HANDLES: usize = 253;

/// Where the task is, as offsets from [`anchor`], and how many handle
/// descriptors came with this packet.
#[derive(Serialize, Deserialize)]
struct Entry {
    trampoline: i64,
    function: i64,
    /// The anchor's distance from the start of its image: the same in
    /// parent and child when both run the same file.
    anchor_in_image: Option<u64>,
    handles: u32,
}

/// The trampoline's type: the task's address, the encoded argument, the
/// handles' descriptors, the result socket and the parent's pid.
type Trampoline = for<'a> fn(usize, Vec<u8>, Vec<OwnedFd>, BorrowedFd<'a>, Pid) -> i32;

/// Run by the loader before `main`, in every program that links mpcore's
/// spawn support (every program that can spawn).
#[used]
#[unsafe(link_section = ".init_array")]
static SPAWNED_CHILD_HOOK: extern "C" fn() = spawned_child_hook;

extern "C" fn spawned_child_hook() {
    // The fork server is a fresh run of the program too, reached the same
    // way (`forkserver.rs`); it never returns either.
    crate::forkserver::serve_if_asked();
    let Some(value) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    // SAFETY: constructors run before `main`, while the loader's thread is
    // the only one: nobody else can be reading the environment. Removed so
    // that programs this child starts in turn are not taken for spawned
    // children themselves.
    unsafe { std::env::remove_var(CHILD_ENV) };
    let code = process::catch(|| run_spawned_child(&value)).unwrap_or(process::UNCAUGHT_PANIC_CODE);
    process::exit_now(code)
}

/// The address every offset is taken from.
fn anchor() -> usize {
    spawned_child_hook as extern "C" fn() as usize
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

/// Starts a fresh run of this program that runs `f(arg)`; returns its pid
/// and the parent's end of its result socket.
pub(crate) fn spawn<A, R>(f: fn(A) -> R, arg: &A) -> Result<(Pid, OwnedFd)>
where
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    let task = Task::new(f, arg)?;
    start(&task)
}

/// A task ready to send: where it is, and its encoded argument with the
/// descriptors of the handles in it, borrowed from the argument (hence
/// the lifetime: the argument must outlive the sending).
pub(crate) struct Task<'arg> {
    trampoline: usize,
    function: usize,
    arg: Vec<u8>,
    fds: Vec<RawFd>,
    _handles: PhantomData<&'arg ()>,
}

impl<'arg> Task<'arg> {
    /// Encodes `arg` for `f`.
    pub(crate) fn new<A, R>(f: fn(A) -> R, arg: &'arg A) -> Result<Task<'arg>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let (encoded, fds) = handles::collect(|| codec::encode(arg));
        Ok(Task {
            trampoline: run_task::<A, R> as Trampoline as usize,
            function: f as usize,
            arg: encoded?,
            fds,
            _handles: PhantomData,
        })
    }

    /// A connected pair of sockets whose second end already holds the two
    /// packets a child reads before its task ([`run_sent_task`]). The child
    /// gets the second end; the first is the parent's end of the result
    /// socket.
    pub(crate) fn packed(&self) -> Result<(OwnedFd, OwnedFd)> {
        let (trampoline, function, fds) = (self.trampoline, self.function, &self.fds[..]);
        // Name the hook, so that the linker keeps the object that holds it (an
        // archive member nobody refers to is left out, `.init_array` and all).
        std::hint::black_box(&SPAWNED_CHILD_HOOK);
        let anchor = anchor();
        let base = image_base(anchor);
        if image_base(trampoline) != base || image_base(function) != base {
            return Err(Error::InvalidArgument(
                "spawn_fn under StartMethod::Spawn or ForkServer needs a function of the program \
                 itself (or of the library that holds mpcore), not one from another shared \
                 library: its address would mean nothing in the new child",
            ));
        }
        if fds.len() > MAX_HANDLES {
            return Err(Error::InvalidArgument(
                "a spawned process's argument may hold at most 253 handles \
                 (Queue, Value, Array, Lock, Event): pass fewer, e.g. one Array instead of many Values",
            ));
        }
        let entry = Entry {
            trampoline: trampoline.wrapping_sub(anchor) as i64,
            function: function.wrapping_sub(anchor) as i64,
            anchor_in_image: base.map(|base| (anchor - base) as u64),
            handles: fds.len() as u32,
        };

        let (ours, theirs) = channel::pair()?;
        // Both packets wait in the child's end of the socket until it reads
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
        Ok((ours, theirs))
    }
}

/// Starts a fresh run of this program that runs `task`.
fn start(task: &Task<'_>) -> Result<(Pid, OwnedFd)> {
    let (ours, theirs) = task.packed()?;
    let value = format!("{} {}", theirs.as_raw_fd(), getpid());
    let pid = exec_self(CHILD_ENV, &value, theirs, true)?;
    Ok((pid, ours))
}

/// Starts a fresh run of this program (`/proc/self/exe`, which names the
/// very file this process runs from) with `var=value` in its environment
/// and `keep` open in it under the same number: the one descriptor of ours
/// it inherits (every other is close-on-exec). With `die_with_us`, it gets
/// `PR_SET_PDEATHSIG` SIGKILL before the exec. Returns its pid; this
/// process's copy of `keep` is closed. std's `Child` neither waits nor
/// kills when dropped: the caller's handle does both, by pid.
pub(crate) fn exec_self(var: &str, value: &str, keep: OwnedFd, die_with_us: bool) -> Result<Pid> {
    let socket = keep.as_raw_fd();
    let mut command = Command::new("/proc/self/exe");
    if let Some(name) = std::env::args_os().next() {
        command.arg0(name);
    }
    command.env(var, value);
    // SAFETY: the closure runs in the forked child before `exec`, where
    // only async-signal-safe calls are allowed: it makes at most two
    // system calls and touches no lock and no memory but its integer and
    // its flag.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(socket, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // The setting survives an exec of a program that gains no
            // privileges: the child dies with us from its very start.
            if die_with_us && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(|e| match e.raw_os_error() {
        Some(errno) => Error::os("exec", nix::errno::Errno::from_raw(errno)),
        None => Error::Io {
            call: "exec",
            reason: e.to_string(),
        },
    })?;
    drop(keep);
    Ok(Pid::from_raw(child.id() as i32))
}

/// The child's side, before `main`: reads the task from the socket the
/// parent named in `value` and runs it. Returns the exit code.
fn run_spawned_child(value: &OsStr) -> i32 {
    let parsed = std::str::from_utf8(value.as_bytes()).ok().and_then(|text| {
        let (socket, parent) = text.split_once(' ')?;
        Some((socket.parse::<RawFd>().ok()?, parent.parse::<i32>().ok()?))
    });
    let Some((socket, parent)) = parsed.filter(|&(socket, _)| is_socket(socket)) else {
        eprintln!(
            "mpcore: {CHILD_ENV}={value:?} is set, but this is not a child that mpcore spawned; \
             unset the variable to run the program"
        );
        return 2;
    };
    // Rust's `main` ignores SIGPIPE; this child never gets there.
    // SAFETY: setting a signal's disposition to "ignore" installs no
    // handler of ours; nothing else runs yet.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // SAFETY: the parent left this descriptor open for us alone
    // (`is_socket` checked that it is one); nothing else in this fresh
    // program owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(socket) };
    // Programs this child starts must not inherit it.
    // SAFETY: `fcntl(F_SETFD)` on a descriptor we own touches no memory.
    unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    run_sent_task(socket.as_fd(), Pid::from_raw(parent))
}

/// Reads the two packets a [`Task`] left in `tx` and runs the task, in a
/// spawned child or in a child of the fork server; `parent` is the process
/// it must die with. Returns the exit code.
pub(crate) fn run_sent_task(tx: BorrowedFd<'_>, parent: Pid) -> i32 {
    let (entry, fds) = match receive_entry(tx) {
        Ok(received) => received,
        Err(e) => return fail(tx, format!("could not read where its task is: {e}")),
    };
    let arg = match channel::recv_bytes(tx) {
        Ok(arg) => arg,
        Err(e) => return fail(tx, format!("could not read its argument: {e}")),
    };
    let anchor = anchor();
    if entry.anchor_in_image != image_base(anchor).map(|base| (anchor - base) as u64) {
        return fail(
            tx,
            "it is not the same program as its parent (the executable differs)".to_owned(),
        );
    }
    let trampoline = anchor.wrapping_add(entry.trampoline as usize);
    let function = anchor.wrapping_add(entry.function as usize);
    // SAFETY: the parent took this offset from a `run_task::<A, R>` of the
    // same executable (checked just above and by the parent's `dladdr`),
    // so it is that function here too, and of type `Trampoline`.
    let trampoline =
        unsafe { std::mem::transmute::<*const (), Trampoline>(trampoline as *const ()) };
    trampoline(function, arg, fds, tx, parent)
}

/// Whether `fd` is an open socket.
pub(crate) fn is_socket(fd: RawFd) -> bool {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `fstat` on any number is safe (a closed one gives EBADF);
    // `stat` is ours and large enough.
    let rc = unsafe { libc::fstat(fd, stat.as_mut_ptr()) };
    // SAFETY: filled in when `fstat` succeeded; zeroed otherwise.
    let stat = unsafe { stat.assume_init() };
    rc == 0 && stat.st_mode & libc::S_IFMT == libc::S_IFSOCK
}

/// The first packet: the [`Entry`] and the handles' descriptors.
fn receive_entry(tx: BorrowedFd<'_>) -> Result<(Entry, Vec<OwnedFd>)> {
    let mut buf = [0u8; 64];
    let mut space = nix::cmsg_space!([RawFd; MAX_HANDLES]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        tx.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| Error::os("recvmsg", e))?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(|e| Error::os("recvmsg", e))? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: the kernel just installed these descriptors for us.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let len = msg.bytes;
    let entry: Entry = codec::decode(&buf[..len])?;
    if fds.len() != entry.handles as usize {
        return Err(Error::InvalidArgument(
            "fewer handle descriptors arrived than were sent (is the open-file limit reached?)",
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
    // SAFETY: the parent took `function` from a `fn(A) -> R` and sent it
    // along with this very instantiation of `run_task`, in the same
    // executable; fn pointers are plain code addresses.
    let f = unsafe { std::mem::transmute::<*const (), fn(A) -> R>(function as *const ()) };
    let arg = match process::catch(|| handles::provide(fds, || codec::decode::<A>(&arg))) {
        Ok((Ok(arg), _)) => arg,
        Ok((Err(_), Some(why))) => return fail(tx, format!("could not read its argument: {why}")),
        Ok((Err(e), None)) => return fail(tx, format!("could not read its argument: {e}")),
        Err(panic) => return fail(tx, format!("reading its argument panicked: {panic}")),
    };
    process::child_main(move || f(arg), tx, parent)
}

/// The anchor's address in this run of the program. A pool's worker that
/// is a fresh run gets the pool's anchor and translates the addresses the
/// pool sends by the difference between the two.
pub(crate) fn anchor_address() -> usize {
    anchor()
}

/// Whether the function at `address` lies in the same image as the
/// anchor: only then is its distance from the anchor the same in a fresh
/// run of the program.
pub(crate) fn in_anchor_image(address: usize) -> bool {
    image_base(address) == image_base(anchor())
}
