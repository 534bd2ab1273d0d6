//! `cargo run -p queue_demo --example ipc_channel`: chapter 4's job on
//! ipc-channel, and a receiver that cannot see a dead child while the
//! parent holds a sender (servo/ipc-channel issue 281).

use std::time::Duration;

#[test]
fn the_ipc_channel_example_gets_both_results_and_waits_on_a_dead_child() {
    let run = testkit::run_example("queue_demo", "ipc_channel", &[], Duration::from_secs(600));
    run.assert_success();
    let lines = run.lines();
    assert_eq!(lines[0], "499667166000");
    assert!(
        lines[1].starts_with("res1 = 249833583000 from pid "),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("res2 = 249833583000 from pid "),
        "{lines:?}"
    );
    assert!(
        lines[3].starts_with("child exited: child process ")
            && lines[3].ends_with(" exited with code 3 without sending a result"),
        "{lines:?}"
    );
    assert_eq!(
        lines[4..],
        [
            "recv with the parent's sender open: nothing after 500 ms, and no error",
            "recv after the parent dropped its sender: disconnected",
        ]
    );
}
