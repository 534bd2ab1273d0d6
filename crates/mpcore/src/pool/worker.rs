//! The worker's side: what travels between the pool and a worker, and the
//! loop a worker runs, from its first packet to `Stop`.

use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::Cell;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::Initializer;
use super::wire::{
    ALL_RETURNED, ChunkEntry, OUTCOMES, TaskOutcome, ToWorker, batch_parts, fn_addr, fn_ptr,
};
use crate::base::StartMethod;
use crate::base::catch;
use crate::base::{Error, Result};
use crate::process::{self, Process};
use crate::start::task as spawn;
use crate::wire::codec;
use crate::wire::handles::Descriptor;
use crate::wire::{channel, many};

/// The entry for tasks `fn(T) -> R`: decodes each argument, calls the
/// task, encodes each outcome. Runs in the worker, where nothing may
/// unwind: a panic in the task, in an argument's `Deserialize`, in a
/// result's `Serialize` or `Drop`, fails that one task with its message,
/// and the worker goes on.
pub(super) fn run_chunk<T: DeserializeOwned, R: Serialize + DeserializeOwned>(
    func: u64,
    args: &[u8],
    count: u32,
) -> Vec<u8> {
    // SAFETY: `func` was made by `fn_addr(f as *const ())` from an
    // `f: fn(T) -> R` in `Pool::submit`, in the same packet as the address
    // of this very instantiation `run_chunk::<T, R>`, so the type is
    // right. The address is valid here: either this worker was forked from
    // the process that took it, and fork copies the whole address space,
    // the same executable image at the same place; or it is a fresh run of
    // the same executable (checked when it started), the pool checked that
    // `f` lies in the image that moves with the anchor, and the address
    // is taken from this run's anchor ([`fn_ptr`]).
    let task = unsafe { std::mem::transmute::<*const (), fn(T) -> R>(fn_ptr(func)) };
    // While every task returns, the values go bare, without a
    // `TaskOutcome` around each (a tag to write, read back and read again
    // per task); the first failure turns the reply into outcomes.
    let mut out = vec![ALL_RETURNED];
    let mut bare = true;
    let mut starts = Vec::with_capacity(count as usize);
    // One deserializer for the whole chunk: one per argument cost more
    // than a tiny argument's decoding.
    let mut arguments = postcard::Deserializer::from_bytes(args);
    // After an argument that cannot be decoded, where the next one starts
    // is unknown: the rest of the chunk fails for the same reason.
    let mut unreadable: Option<String> = None;
    // The task running, where its output began, and how far it got:
    // what a panic leaves to go on from.
    let at = Cell::new(0u32);
    let start = Cell::new(0usize);
    let stage = Cell::new(Stage::Decoding);
    while at.get() < count {
        if let Some(reason) = &unreadable {
            let failure = TaskOutcome::<()>::BadArgument(reason.clone());
            let here = out.len();
            push_failure(&mut out, &mut starts, &mut bare, here, &failure);
            at.set(at.get() + 1);
            continue;
        }
        // One `catch` for every task up to the first that fails, which
        // says how far it got: a catch per task cost more than the task
        // itself for tiny ones.
        let ran = catch(|| {
            while at.get() < count {
                start.set(out.len());
                stage.set(Stage::Decoding);
                let arg = T::deserialize(&mut arguments).map_err(Failed::Argument)?;
                stage.set(Stage::Running);
                let value = task(arg);
                stage.set(Stage::Encoding);
                // Not dropped if `Serialize` panics: a `Drop` that panicked
                // too, while unwinding, would abort the worker.
                let value = ManuallyDrop::new(value);
                let encoded = if bare {
                    codec::encode_into(&mut out, &*value)
                } else {
                    codec::encode_into(&mut out, &TaskOutcome::Returned(&*value))
                };
                stage.set(Stage::Dropping);
                drop(ManuallyDrop::into_inner(value));
                encoded.map_err(Failed::Result)?;
                starts.push(start.get());
                at.set(at.get() + 1);
            }
            Ok(())
        });
        let failure: TaskOutcome<()> = match ran {
            Ok(Ok(())) => break,
            Ok(Err(Failed::Argument(e))) => {
                unreadable = Some(e.to_string());
                TaskOutcome::BadArgument(e.to_string())
            }
            Ok(Err(Failed::Result(Error::Codec { reason, .. }))) => TaskOutcome::BadResult(reason),
            Ok(Err(Failed::Result(e))) => TaskOutcome::BadResult(e.to_string()),
            Err(message) => TaskOutcome::Panicked(match stage.get() {
                Stage::Decoding => {
                    unreadable = Some(format!(
                        "an earlier argument of its chunk panicked while it was being \
                         deserialized: {message}"
                    ));
                    format!("the argument panicked while it was being deserialized: {message}")
                }
                Stage::Running => message,
                Stage::Encoding => {
                    format!("the result panicked while it was being serialized: {message}")
                }
                Stage::Dropping => {
                    format!("the result's destructor panicked after it was serialized: {message}")
                }
            }),
        };
        push_failure(&mut out, &mut starts, &mut bare, start.get(), &failure);
        at.set(at.get() + 1);
    }
    // Checked to read back, so that the caller gets a task's error rather
    // than a result it cannot decode: the chunk in one pass, and only if
    // that fails, task by task.
    let read_back = if bare {
        codec::check_decodes_all::<R>(&out[1..], count)
    } else {
        codec::check_decodes_all::<TaskOutcome<R>>(&out[1..], count)
    };
    if read_back.is_err() {
        if bare {
            to_outcomes(&mut out, &mut starts);
        }
        out = recheck::<R>(&out, &starts);
    }
    out
}

/// Puts `failure` where the task that began at `start` wrote, turning a
/// reply of bare values into outcomes first.
fn push_failure(
    out: &mut Vec<u8>,
    starts: &mut Vec<usize>,
    bare: &mut bool,
    start: usize,
    failure: &TaskOutcome<()>,
) {
    out.truncate(start);
    if *bare {
        to_outcomes(out, starts);
        *bare = false;
    }
    starts.push(out.len());
    let _ = codec::encode_into(out, failure);
}

/// Turns a reply of bare values, which begin at `starts`, into the same
/// values as outcomes (`TaskOutcome::Returned` is its tag, one 0 byte,
/// then the value), and moves `starts` with them.
fn to_outcomes(out: &mut Vec<u8>, starts: &mut [usize]) {
    let mut outcomes = Vec::with_capacity(out.len() + starts.len());
    outcomes.push(OUTCOMES);
    for i in 0..starts.len() {
        let end = starts.get(i + 1).copied().unwrap_or(out.len());
        let value = &out[starts[i]..end];
        starts[i] = outcomes.len();
        outcomes.push(0);
        outcomes.extend_from_slice(value);
    }
    *out = outcomes;
}

/// How far a task got before it panicked.
#[derive(Clone, Copy)]
enum Stage {
    Decoding,
    Running,
    Encoding,
    Dropping,
}

/// Why a task failed without a panic.
enum Failed {
    Argument(postcard::Error),
    Result(Error),
}

/// The chunk's outcomes again, each one that does not read back replaced
/// by its task's `BadResult`; `starts` says where each outcome begins.
fn recheck<R: DeserializeOwned>(out: &[u8], starts: &[usize]) -> Vec<u8> {
    let mut checked = Vec::with_capacity(out.len());
    checked.push(OUTCOMES);
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(out.len());
        let outcome = &out[start..end];
        match codec::check_decodes::<TaskOutcome<R>>(outcome) {
            Ok(()) => checked.extend_from_slice(outcome),
            Err(e) => {
                let reason = match e {
                    Error::Codec { reason, .. } => reason,
                    e => e.to_string(),
                };
                let _ = codec::encode_into(&mut checked, &TaskOutcome::<()>::BadResult(reason));
            }
        }
    }
    checked
}

/// Which worker this process is: `N` of `ForkPoolWorker-N`, or 0 in a
/// process that is no pool worker. Set once, in the worker, right after
/// the fork; read by the panic hook that [`name_worker_panics`] installs.
static WORKER_NUMBER: AtomicUsize = AtomicUsize::new(0);

/// How this worker started, as [`kind`] numbers it: which of Python's
/// names it has, `ForkPoolWorker`, `SpawnPoolWorker` or
/// `ForkServerPoolWorker`.
static WORKER_KIND: AtomicU8 = AtomicU8::new(0);

fn kind(method: StartMethod) -> u8 {
    match method {
        StartMethod::Fork => 0,
        StartMethod::Spawn => 1,
        StartMethod::ForkServer => 2,
    }
}

/// Python's name for the workers a pool starts by `method`, without the
/// number: `ForkPoolWorker`, `SpawnPoolWorker`, `ForkServerPoolWorker`.
pub(super) fn worker_name(method: StartMethod) -> &'static str {
    match kind(method) {
        0 => "ForkPoolWorker",
        1 => "SpawnPoolWorker",
        _ => "ForkServerPoolWorker",
    }
}

/// Makes a worker's panic message name the worker (`thread
/// 'ForkPoolWorker-3' (4242) panicked at ...`, as Python names its worker
/// processes) instead of the pool's supervisor thread that forked it.
///
/// Runs in the pool's process, before its first fork: it wraps the panic
/// hook in place (yours, or std's), and the wrapper hands every panic of a
/// process that is no worker to it unchanged. The worker cannot do this
/// itself, nor run its loop on a thread of its own with that name: a
/// worker is a fork of a process whose other threads may hold std's
/// internal locks at that instant (the hook's, the new-thread
/// bookkeeping's), and taking one of those in the worker would wait for
/// ever. Here, in the process where the holders run, it only waits its
/// turn.
pub(super) fn name_worker_panics() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            match WORKER_NUMBER.load(Ordering::Relaxed) {
                0 => previous(info),
                n => report_worker_panic(n, info),
            }
        }));
    });
}

/// std's panic message, under the worker's name; one `eprint!`, so that
/// a test harness that captures output captures this too.
fn report_worker_panic(worker: usize, info: &panic::PanicHookInfo<'_>) {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("Box<dyn Any>");
    let at = info
        .location()
        .map_or_else(String::new, |l| format!(" at {l}"));
    let backtrace = Backtrace::capture();
    let tail = match backtrace.status() {
        BacktraceStatus::Captured => format!("stack backtrace:\n{backtrace}"),
        _ => "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n"
            .to_owned(),
    };
    eprint!(
        "\nthread '{}-{worker}' ({}) panicked{at}:\n{message}\n{tail}",
        worker_name(match WORKER_KIND.load(Ordering::Relaxed) {
            0 => StartMethod::Fork,
            1 => StartMethod::Spawn,
            _ => StartMethod::ForkServer,
        }),
        std::process::id()
    );
}

/// A worker's life, on the thread that forked it (the only thread a fork
/// copies). `number` is the worker's `N` in `ForkPoolWorker-N`.
pub(super) fn worker_main(conn: OwnedFd, number: usize, initializer: Option<Initializer>) {
    WORKER_NUMBER.store(number, Ordering::Relaxed);
    let broken = initializer.and_then(|init| initialize(|| init.run()));
    // Forked: every address the pool sends is right here as it is.
    worker_loop(conn.as_fd(), broken.as_deref());
}

/// Runs the pool's initializer; the message a task gets if it panicked.
///
/// A worker whose initializer panicked stays, and fails every task it is
/// given with that panic: were it to exit, its replacement would panic
/// the same way, and the pool would start workers for ever.
fn initialize(init: impl FnOnce()) -> Option<String> {
    catch(init)
        .err()
        .map(|message| format!("the pool's initializer panicked in this worker: {message}"))
}

/// What a worker that is not forked (a fresh run of the program) gets
/// from its pool, as the argument of [`worker_entry`]: its socket, its
/// number, and the initializer with its argument, serialized (a handle in
/// that argument travels as a descriptor).
///
/// Functions travel as offsets from mpcore's anchor (`wire::fn_addr`),
/// which mean the same in a fresh run of the program as in the pool's.
#[derive(Serialize, Deserialize)]
#[serde(bound(serialize = "A: Serialize", deserialize = "A: DeserializeOwned"))]
struct WorkerStart<A> {
    conn: Descriptor,
    number: usize,
    kind: u8,
    /// The initializer's address (in the pool's process) and argument.
    init: Option<(u64, A)>,
}

/// How the supervisor starts a worker by a method other than fork: with
/// the process builder to use, the worker's end of its socket, and its
/// number. Made by [`spawner`], once per pool, for the initializer's type.
pub(super) type SpawnWorker =
    Arc<dyn Fn(process::Builder, OwnedFd, usize, StartMethod) -> Result<Process<()>> + Send + Sync>;

/// The way to start workers that run `init` (its `fn` and argument)
/// first, if any, without fork.
pub(super) fn spawner<A>(init: Option<(fn(A), A)>) -> SpawnWorker
where
    A: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    Arc::new(move |builder, conn, number, method| {
        let init = match &init {
            Some((f, arg)) => {
                let addr = *f as usize;
                if !spawn::in_anchor_image(addr) {
                    return Err(Error::InvalidArgument(
                        "a pool's initializer under StartMethod::Spawn or ForkServer must be a \
                         function of the program itself (or of the library that holds mpcore): \
                         its address would mean nothing in a fresh run of the program",
                    ));
                }
                Some((fn_addr(addr as *const ()), arg.clone()))
            }
            None => None,
        };
        let start = WorkerStart {
            conn: Descriptor(conn),
            number,
            kind: kind(method),
            init,
        };
        builder.spawn_fn(worker_entry::<A>, start)
    })
}

/// A worker's life when it is a fresh run of the program: its own panic
/// hook (nothing of the pool's process came with it), the initializer,
/// then the same loop as a forked worker's.
fn worker_entry<A: Serialize + DeserializeOwned>(start: WorkerStart<A>) {
    WORKER_KIND.store(start.kind, Ordering::Relaxed);
    WORKER_NUMBER.store(start.number, Ordering::Relaxed);
    // This process has one thread and nothing else that could hold the
    // hook's lock: safe to take it here.
    name_worker_panics();
    let broken = start.init.and_then(|(addr, arg)| {
        // SAFETY: the pool took `addr` from an `fn(A)` (its initializer,
        // `spawner::<A>`, checked to lie in the anchor's image), and sent
        // it with this very instantiation `worker_entry::<A>`, as its
        // offset from the anchor: in this run of the same executable
        // (checked when it started), that offset names the same function.
        let f = unsafe { std::mem::transmute::<*const (), fn(A)>(fn_ptr(addr)) };
        initialize(|| f(arg))
    });
    worker_loop(start.conn.0.as_fd(), broken.as_deref());
}

/// Waits for a packet, runs it, sends the results back, until `Stop` or
/// until the pool is gone.
fn worker_loop(conn: BorrowedFd<'_>, broken: Option<&str>) {
    // Only this worker reads its socket, so it may sleep in `recvmsg`.
    while let Ok(packet) = channel::recv_bytes(conn) {
        let keep_going = match batch_parts(&packet) {
            Some(mut chunks) => {
                chunks.all(|chunk| chunk.is_some_and(|chunk| run_packet(conn, chunk, broken)))
            }
            None => run_packet(conn, &packet, broken),
        };
        if !keep_going {
            return;
        }
    }
}

/// Runs one `Run` packet and sends its results; `false` when the worker
/// should exit (`Stop`, a packet it cannot read, or the pool gone). With
/// `broken`, the initializer's panic, every task fails with it instead.
pub(super) fn run_packet(conn: BorrowedFd<'_>, packet: &[u8], broken: Option<&str>) -> bool {
    let Ok((ToWorker::Run { entry, func, count }, args)) =
        postcard::take_from_bytes::<ToWorker>(packet)
    else {
        return false;
    };
    // SAFETY: the pool wrote this address with
    // `fn_addr(run_chunk::<T, R> as ChunkEntry as *const ())`, so it is
    // a `ChunkEntry`. It is valid in this process: either we are a fork
    // of the pool's process, with the same anchor at the same address, or
    // a fresh run of the same executable (checked when it started), whose
    // anchor moved with the whole image the entry lies in.
    let entry = unsafe { std::mem::transmute::<*const (), ChunkEntry>(fn_ptr(entry)) };
    let results = match broken {
        // A panic's outcome is encoded alike whatever the task returns.
        Some(message) => {
            let panicked = TaskOutcome::<()>::Panicked(message.to_owned());
            let mut results = vec![OUTCOMES];
            for _ in 0..count {
                let _ = codec::encode_into(&mut results, &panicked);
            }
            results
        }
        None => entry(func, args, count),
    };
    // Sent before the next chunk starts: if this worker dies later, the
    // pool knows that this chunk is done and which one it was running.
    match many::send_bytes_to_many(conn, &results) {
        Ok(()) => true,
        Err(Error::Disconnected) => false,
        // The results could not go (no memfd for a large one, say): say
        // so, in a few bytes that fit a packet, and go on. Leaving would
        // make the pool report a death that did not happen.
        Err(e) => {
            let mut why = vec![OUTCOMES];
            let reason = e.to_string();
            for _ in 0..count {
                let _ = codec::encode_into(&mut why, &TaskOutcome::<()>::NotSent(reason.clone()));
            }
            many::send_bytes_to_many(conn, &why).is_ok()
        }
    }
}
