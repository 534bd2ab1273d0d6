//! How a child process begins: Python's start methods.

use std::fmt;
use std::sync::OnceLock;

use crate::base::{Error, Result};

/// How a child process begins, Python's `multiprocessing` start methods.
///
/// | Python | mpcore |
/// | --- | --- |
/// | `mp.set_start_method("spawn")` | [`set_start_method`]`(StartMethod::Spawn)?` |
/// | `mp.get_start_method()` | [`get_start_method`]`()` |
/// | `ctx = mp.get_context("spawn"); ctx.Process(target=f, args=(x,))` | `process::Builder::new().start_method(StartMethod::Spawn).spawn_fn(f, x)?` |
/// | `mp.get_context("forkserver").Process(target=f, args=(x,))` | `process::Builder::new().start_method(StartMethod::ForkServer).spawn_fn(f, x)?` |
///
/// - **`Fork`** (the default): the child is a copy of the parent at the
///   instant of the `fork`. It starts in microseconds and can run a
///   closure, but it inherits every lock exactly as it was, and only the
///   thread that forked: a lock another thread held then stays held for
///   ever in the child (the hazard in the [crate docs](crate)).
/// - **`Spawn`**: the child is a fresh `exec` of the same program. It
///   inherits no threads, no locks and no memory of the parent's, only
///   what is sent to it: a plain `fn` and its serde argument (handles such
///   as [`Queue`](crate::Queue) and [`Value`](crate::Value) travel as
///   descriptors). It costs an `exec` and the program's start-up, and
///   that start-up is the program's own: its constructors (functions in
///   `.init_array`, its own and its libraries', such as a `ctor` crate's)
///   run again in every spawned child, before mpcore takes it to its task;
///   `main` does not run. It works where a fresh run of `/proc/self/exe`
///   is the program with mpcore in it (see
///   [`process::Builder::spawn_fn`](crate::process::Builder::spawn_fn)).
/// - **`ForkServer`** (Python 3.14's default on Linux): the first such
///   child starts a server, a fresh `exec` of the same program that stays
///   single-threaded and does nothing but fork. Every child after that is
///   a fork of the server: it costs a fork of a small process, not an
///   `exec`, and like a spawned child it inherits none of the parent's
///   threads, locks or memory, only the `fn` and the argument sent to it.
///   The server, one per program, is the children's parent: it reaps
///   them and reports how each ended to the process that asked for it,
///   and it sends them the signals of [`Process::kill`](crate::Process::kill)
///   and [`Process::terminate`](crate::Process::terminate). It ends,
///   killing its children, when the program ends; if it has been killed,
///   a thread of mpcore's reaps it at once, and the next child starts a
///   new one. The server is a fresh run of the program too: the
///   program's constructors run again in it, once, and its children
///   inherit what they did.
///
///   **What a `ForkServer` child gets, and when.** With each request,
///   from the process that asks: the `fn`, its argument (and the handles
///   in it), and the current working directory, which the child enters
///   before its task (a directory it may not enter fails the child with
///   [`Error::StartFailed`](crate::Error::StartFailed)). The credentials are
///   the program's of now: the server runs with those the program had
///   when it started it, and if the real or effective user or group or
///   the supplementary groups have changed since (a program that drops
///   root after its start-up), the next request starts a new server with
///   the new ones. The old server forks no more; its children keep the
///   credentials they have, can still be killed and terminated (by their
///   server, on our behalf), and the old server ends with its last child.
///   While the real and effective user (or group) differ, `ForkServer`
///   refuses to start a server
///   ([`Error::InvalidArgument`](crate::Error::InvalidArgument), as
///   `Spawn` does): that `exec` would be a secure execution, which
///   mpcore's hook before `main` does not serve.
///
///   From the program's first `ForkServer` request, when the server
///   started, as a `fork` would copy them then (Python's forkserver
///   children, too, inherit the server's state, its preloaded modules and
///   its `os.environ`): the environment (a later `std::env::set_var` is
///   not seen), the command line, the resource limits (the soft limit on
///   open files too: the server raises its own to the hard limit, and
///   gives its children the first one back), the umask, the signal mask
///   and the signals set to be ignored (but `SIGINT`, which the server
///   ignores and its children get back at its default), standard input,
///   output and error, the nice value and scheduling policy, the
///   capabilities, the control group and namespaces, and the program file
///   itself. Change those before the first request, or set them in the
///   task.
///
///   Each running child costs the server one file descriptor and the
///   program two (the child's result and report sockets). A request the
///   server has no room for fails alone, with `EMFILE` ("too many open
///   files"); the children already running are not disturbed.
///
/// | | `Fork` | `Spawn` | `ForkServer` |
/// | --- | --- | --- | --- |
/// | runs | a closure or a `fn` | a `fn` with a serde argument | a `fn` with a serde argument |
/// | the child begins as | a copy of the parent | a fresh run of the program | a copy of the server |
/// | the parent's threads' locks | copied, maybe held | none | none |
/// | cost of a start | a fork of the parent | an `exec` and the program's start-up | a fork of the server (and one `exec`, for the first) |
/// | the child's parent | the program | the program | the server |
///
/// ```
/// use mpcore::{StartMethod, process};
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// let mut child = process::Builder::new()
///     .start_method(StartMethod::Spawn)
///     .spawn_fn(square, 12)?;
/// assert_eq!(child.join()?, 144);
///
/// let mut child = process::Builder::new()
///     .start_method(StartMethod::ForkServer)
///     .spawn_fn(square, 13)?;
/// assert_eq!(child.join()?, 169);
/// # Ok::<(), mpcore::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StartMethod {
    /// Copy the parent with `fork` (Python's `"fork"`).
    #[default]
    Fork,
    /// Start the program afresh with `exec` (Python's `"spawn"`).
    Spawn,
    /// Ask a single-threaded server process to fork the child (Python's
    /// `"forkserver"`).
    ForkServer,
}

impl fmt::Display for StartMethod {
    /// Python's name for it: `fork`, `spawn` or `forkserver`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StartMethod::Fork => "fork",
            StartMethod::Spawn => "spawn",
            StartMethod::ForkServer => "forkserver",
        })
    }
}

static DEFAULT: OnceLock<StartMethod> = OnceLock::new();

/// Sets the program's default start method, once (Python's
/// `mp.set_start_method(method)`). Processes started afterwards without a
/// method of their own ([`process::Builder::start_method`](crate::process::Builder::start_method))
/// use it. Setting the same method again is harmless.
///
/// ```
/// use mpcore::{StartMethod, get_start_method, set_start_method};
///
/// set_start_method(StartMethod::Spawn)?;
/// assert_eq!(get_start_method(), StartMethod::Spawn);
/// assert!(set_start_method(StartMethod::Fork).is_err());
/// # Ok::<(), mpcore::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::StartMethodAlreadySet`] if another method was set before, as
/// Python raises `RuntimeError` without `force=True`.
pub fn set_start_method(method: StartMethod) -> Result<()> {
    let current = *DEFAULT.get_or_init(|| method);
    if current == method {
        Ok(())
    } else {
        Err(Error::StartMethodAlreadySet {
            current,
            requested: method,
        })
    }
}

/// Every start method mpcore has (Python's
/// `mp.get_all_start_methods()`), the default first, as Python lists it:
/// `[fork, spawn, forkserver]`. Each works on Linux, where mpcore runs;
/// `Spawn` and `ForkServer` need a program that a fresh run reaches
/// mpcore in (see [`process::Builder::spawn_fn`](crate::process::Builder::spawn_fn)).
///
/// ```
/// use mpcore::{StartMethod, get_all_start_methods};
///
/// let names: Vec<String> = get_all_start_methods().iter().map(|m| m.to_string()).collect();
/// assert_eq!(names, ["fork", "spawn", "forkserver"]);
/// assert_eq!(get_all_start_methods()[0], StartMethod::default());
/// ```
pub fn get_all_start_methods() -> [StartMethod; 3] {
    [
        StartMethod::Fork,
        StartMethod::Spawn,
        StartMethod::ForkServer,
    ]
}

/// The program's default start method: the one set by
/// [`set_start_method`], or [`StartMethod::Fork`].
pub fn get_start_method() -> StartMethod {
    DEFAULT.get().copied().unwrap_or_default()
}
