//! A thread that holds `std::io::stdout().lock()` (the usual fast-printing
//! idiom) while it makes a pool, or while another thread forks, gets an
//! error instead of a hang: a fork must not copy that lock held, and must
//! not wait for ever for a holder that may be waiting for the fork.

use std::time::Duration;

#[test]
fn a_held_stdout_lock_gives_errors_not_hangs() {
    let out = testkit::run(
        env!("CARGO_BIN_EXE_mpcore-test-helper"),
        &["stdout-held"],
        Duration::from_secs(60),
    );
    out.assert_success();
    let lines = out.lines();
    let locked = "could not fork: stdout or stderr stayed locked by another thread for 500ms";
    assert!(
        lines[0].starts_with("pool-new: ") && lines[0].contains(locked),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("spawn-from-thread: ") && lines[1].contains(locked),
        "{lines:?}"
    );
    // The one worker runs one task and retires; its replacement cannot be
    // forked, so the other tasks fail, each with an error of its own.
    assert_eq!(lines[2], "imap: 4 results, 1 ok", "{lines:?}");
    assert!(
        lines[3].starts_with("imap error: the pool has no worker left")
            && lines[3].contains(locked),
        "{lines:?}"
    );
    assert_eq!(lines[4], "released: [1, 2, 3]", "{lines:?}");
}
