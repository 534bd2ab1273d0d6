//! The one system call under every wait in shared memory: sleep while a
//! 32-bit word holds a value, and wake the sleepers on a word. Not
//! `FUTEX_PRIVATE_FLAG`: the kernel keys the wait on the shared page, so a
//! wake in another process finds the sleeper.

use std::ptr;
use std::sync::atomic::AtomicU32;
use std::time::Instant;

use nix::errno::Errno;

use super::deadline;

/// Sleeps while `*word == expected`, until woken or past `deadline`
/// (`None`: for ever). Spurious returns are possible: callers
/// look again and loop.
pub(crate) fn wait(
    word: &AtomicU32,
    expected: u32,
    deadline: Option<Instant>,
) -> Result<(), Errno> {
    let abstime = match deadline.map(deadline::monotonic) {
        Some(Ok(abstime)) => abstime,
        Some(Err(_)) => return Err(Errno::EINVAL),
        None => None,
    };
    let timeout = abstime
        .as_ref()
        .map_or(ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, aligned 32-bit word; `timeout` is null or a
    // valid absolute timespec that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT_BITSET,
            expected,
            timeout,
            ptr::null::<u32>(),
            libc::FUTEX_BITSET_MATCH_ANY,
        )
    };
    if rc == -1 { Err(Errno::last()) } else { Ok(()) }
}

/// Wakes up to `n` threads, in any process, that wait on `word`.
pub(crate) fn wake(word: &AtomicU32, n: i32) {
    // SAFETY: `word` is a live, aligned 32-bit word; FUTEX_WAKE only reads
    // its address. It cannot fail for such a word, so the result is unused.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n);
    }
}
