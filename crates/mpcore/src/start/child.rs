//! What a forked child does, from the fork to `_exit`. (What makes a fork
//! safe to do while other threads run, the std streams' locks, is in
//! `streams.rs`.)

use std::borrow::Cow;
use std::io::{self, Write};
use std::mem;
use std::os::fd::BorrowedFd;
use std::panic::{self, AssertUnwindSafe};

use nix::sys::signal::Signal;
use nix::unistd::{Pid, getppid};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::base::{Error, Result, catch};
use crate::wire::channel;
use crate::wire::codec;

/// What the child sends back: the closure's value, or its panic.
#[derive(Serialize, Deserialize)]
pub(crate) enum Outcome<T> {
    Returned(T),
    Panicked(String),
    /// A spawned child could not get to its task (`spawn.rs`).
    Failed(String),
    /// Only in the parent: the message came but could not be read.
    #[serde(skip)]
    Lost(Error),
}

/// The child's side of `spawn`: run, send, flush, `_exit`. It never
/// returns and never unwinds: below this frame is the parent's stack (a
/// test harness, its `main`), and a child that went on there would run the
/// parent's code and drop the parent's handles (killing a daemon sibling).
/// So everything the child does runs under `catch_unwind`, and the one
/// thing a catch cannot make safe, a panic payload whose own destructor
/// panics, is forgotten instead of dropped: the process ends a moment
/// later anyway.
pub(crate) fn run_child<T, F>(f: F, tx: BorrowedFd<'_>, parent: Pid) -> !
where
    F: FnOnce() -> T,
    T: Serialize + DeserializeOwned,
{
    let code = match panic::catch_unwind(AssertUnwindSafe(|| child_main(f, tx, parent))) {
        Ok(code) => code,
        Err(payload) => {
            mem::forget(payload);
            UNCAUGHT_PANIC_CODE
        }
    };
    exit_now(code)
}

/// The exit code of a child that panicked where even its report to the
/// parent could not be made. The parent sees no message and reports this
/// code ([`Error::Exited`]); nothing else in mpcore exits with it.
pub(crate) const UNCAUGHT_PANIC_CODE: i32 = 70;

/// Runs `f` and sends its outcome: the encoded value, or the message of
/// whatever panicked, in `f`, in the value's `Serialize` or in its `Drop`.
/// Returns the exit code: 0 when the value went out, 1 otherwise.
pub(crate) fn child_main<T, F>(f: F, tx: BorrowedFd<'_>, parent: Pid) -> i32
where
    F: FnOnce() -> T,
    T: Serialize + DeserializeOwned,
{
    // Die with the parent, so that no child outlives it as an orphan. The
    // parent may have died before we asked: then we are already an orphan.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if getppid() != parent {
        return 1;
    }

    let mut small = [0u8; 256];
    let encoded = catch(f).and_then(|value| encode_result(value, &mut small));
    let failure = match encoded {
        Ok(bytes) => match channel::send_bytes(tx, &bytes) {
            Ok(()) => return 0,
            Err(e) => format!("could not send the result: {e}"),
        },
        Err(message) => message,
    };
    let _ = channel::send(tx, &Outcome::<()>::Panicked(failure));
    1
}

/// Encodes `Outcome::Returned(value)`, then drops `value` (before it is
/// sent, so that a panic in its destructor is still reported), then checks
/// that the parent will be able to decode it ([`codec::check_decodes`]).
/// `Err` holds the message for the parent when a step fails or panics.
fn encode_result<T: Serialize + DeserializeOwned>(
    value: T,
    buf: &mut [u8],
) -> Result<Cow<'_, [u8]>, String> {
    let returned = Outcome::Returned(&value);
    let encoded = catch(move || {
        let buf = buf; // moved in, so that the bytes may borrow it
        codec::encode_in(&returned, buf)
    });
    let dropped = catch(move || drop(value));
    match (encoded, dropped) {
        (Err(message), _) => Err(format!(
            "the result panicked while it was being serialized: {message}"
        )),
        (Ok(Err(e)), _) => Err(format!("could not send the result: {e}")),
        (Ok(Ok(_)), Err(message)) => Err(format!(
            "the result's destructor panicked after it was serialized: {message}"
        )),
        (Ok(Ok(bytes)), Ok(())) => match catch(|| codec::check_decodes::<Outcome<T>>(&bytes)) {
            Ok(Ok(())) => Ok(bytes),
            Ok(Err(e)) => Err(format!("could not send the result: {e}")),
            Err(message) => Err(format!(
                "the result panicked while it was read back to check it: {message}"
            )),
        },
    }
}

/// Whether this process has only one thread, the caller. glibc (2.32 and
/// newer) keeps this flag: set at start, cleared by the first
/// `pthread_create`, and never set again.
pub(crate) fn single_threaded() -> bool {
    // SAFETY: glibc's <sys/single_threaded.h> declares this byte; the
    // `libc` crate does not bind it yet.
    unsafe extern "C" {
        static __libc_single_threaded: libc::c_char;
    }
    // SAFETY: the byte is always there to read. Only `pthread_create`
    // writes it, so while it reads 1 no other thread exists to race with
    // this read; a 0 stays 0.
    unsafe { std::ptr::read_volatile(&raw const __libc_single_threaded) != 0 }
}

/// Flushes stdout and leaves at once, without `atexit` handlers or
/// destructors: those belong to the parent. (Rust's stderr keeps no
/// buffer: there is nothing of it to flush.)
pub(crate) fn exit_now(code: i32) -> ! {
    let _ = io::stdout().flush();
    // SAFETY: `_exit` ends the process; it has no preconditions.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_process_that_started_a_thread_is_not_single_threaded() {
        // Once any thread has been started, spawn must take the std
        // streams' locks, even after that thread has ended.
        std::thread::spawn(|| ()).join().unwrap();
        assert!(!super::single_threaded());
    }
}
