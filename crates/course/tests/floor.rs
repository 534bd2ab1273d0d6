//! The floors of the benchmarks keep mpcore's promise of no orphans: a
//! floor's children die with their parent, and a fork that fails midway
//! takes down the children forked before it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::{has_ended, live_children, wait_until_ended};

const HELPER: &str = env!("CARGO_BIN_EXE_course-test-helper");

#[test]
fn the_pingpong_child_dies_with_its_killed_parent() {
    let mut helper = Command::new(HELPER)
        .arg("pingpong")
        .stdout(Stdio::null())
        .spawn()
        .expect("start the helper");
    let deadline = Instant::now() + Duration::from_secs(30);
    let child = loop {
        if let Some(&child) = live_children(helper.id()).first() {
            break child;
        }
        if Instant::now() >= deadline {
            let _ = helper.kill();
            let _ = helper.wait();
            panic!("the helper never forked its pingpong child");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    helper.kill().expect("kill the helper");
    helper.wait().expect("reap the helper");
    let ended = wait_until_ended(child, Duration::from_secs(10));
    if !ended {
        // Leave no orphan behind, even when the test fails.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(
        ended,
        "the pingpong child {child} outlived its killed parent"
    );
    assert!(has_ended(child));
}

#[test]
fn a_fork_that_fails_midway_leaves_no_child_of_shared_atomic_increments() {
    let run = testkit::run(HELPER, &["as-nobody", "nproc"], Duration::from_secs(60));
    run.assert_success();
    assert_eq!(
        run.lines(),
        [
            "result: fork failed: EAGAIN: Try again",
            "children left: none"
        ]
    );
}
