//! `cargo run -p event_demo --example raw_sync_events`: raw_sync's events
//! in a shared_memory segment beside mpcore's `Event`.

use std::time::Duration;

#[test]
fn raw_sync_events_wake_like_mpcore_events_but_time_out_without_saying_so() {
    let run = testkit::run_example(
        "event_demo",
        "raw_sync_events",
        &[],
        Duration::from_secs(600),
    );
    run.assert_success();
    assert_eq!(
        run.lines(),
        [
            "raw_sync: one set woke 2 of 2 waiting children",
            "raw_sync: a wait of 200ms that nobody ends: \"Failed waiting for signal\"",
            "raw_sync: auto-reset: one set woke 1 of 2 waiting children",
            "mpcore:   one set woke 2 of 2 waiting children",
            "mpcore:   a wait of 200ms that nobody ends: \"timed out after 200ms\"",
        ]
    );
}
