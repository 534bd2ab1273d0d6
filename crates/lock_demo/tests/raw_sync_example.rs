//! `cargo run -p lock_demo --example raw_sync`: the lock job on raw_sync's
//! mutex in a shared_memory segment, and what each lock does when its
//! holder is killed with SIGKILL.

use std::time::Duration;

#[test]
fn raw_sync_stays_locked_by_a_dead_holder_where_mpcore_reports_it() {
    let run = testkit::run_example("lock_demo", "raw_sync", &[], Duration::from_secs(600));
    run.assert_success();
    let lines = run.lines();
    assert_eq!(
        lines[0],
        "raw_sync: 1000 x 1 and 1000 x 3 under the lock: 4000"
    );
    for (line, who) in [(lines[1], "raw_sync: "), (lines[3], "mpcore:   ")] {
        assert!(
            line.starts_with(&format!("{who}the holder was killed: child process "))
                && line.ends_with(" was killed by signal SIGKILL"),
            "{lines:?}"
        );
    }
    // ETIMEDOUT (110): the dead process still holds raw_sync's mutex.
    assert!(
        lines[2].starts_with("raw_sync: the next lock: \"Failed to acquire mutex : 110\" after "),
        "{lines:?}"
    );
    assert_eq!(
        lines[4],
        "mpcore:   the next acquire: \"the process or thread that held the lock died while \
         holding it; the lock works again, but the data it protected may be half-updated\""
    );
    assert_eq!(lines[5], "mpcore:   the one after: taken");
}
