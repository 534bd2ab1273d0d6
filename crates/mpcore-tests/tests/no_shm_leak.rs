//! Shared memory never leaks into `/dev/shm`: not after a normal run, not
//! after a panic, not after the parent is killed with SIGKILL.
//!
//! The strong check is that mpcore never creates a name there at all: a
//! process holding every kind of shared object maps nothing and opens
//! nothing under `/dev/shm`, only anonymous shared pages (which the kernel
//! shows as `/dev/zero (deleted)`, mode `rw-s`). The listing of `/dev/shm`
//! before and after each run is compared as well. Each scenario runs in the
//! `mpcore-test-helper` binary, so that it can panic or be killed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use testkit::{anonymous_shared_mappings, dev_shm_entries, shm_uses};

const LIMIT: Duration = Duration::from_secs(60);
const HELPER: &str = env!("CARGO_BIN_EXE_mpcore-test-helper");

fn assert_no_new_entries(before: &std::collections::BTreeSet<String>) {
    let new: Vec<_> = dev_shm_entries().difference(before).cloned().collect();
    assert!(new.is_empty(), "new entries in /dev/shm: {new:?}");
}

#[test]
fn no_shm_entry_after_a_normal_run() {
    let before = dev_shm_entries();
    testkit::run(HELPER, &["shm", "normal"], LIMIT).assert_success();
    assert_no_new_entries(&before);
}

#[test]
fn no_shm_entry_after_a_panic() {
    let before = dev_shm_entries();
    let run = testkit::run(HELPER, &["shm", "panic"], LIMIT);
    assert!(!run.status.success(), "the helper panicked on purpose");
    assert!(run.stderr.contains("panicked on purpose"), "{}", run.stderr);
    assert_no_new_entries(&before);
}

#[test]
fn no_shm_entry_after_the_parent_is_killed() {
    let before = dev_shm_entries();
    let mut helper = Command::new(HELPER)
        .args(["shm", "killed"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the helper");
    let helper_pid = helper.id();
    let stdout = helper.stdout.take().expect("piped stdout");

    // Wait, with a deadline, for the helper to hold everything and to name
    // its child.
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(pid) = line.strip_prefix("ready ") {
                let _ = tx.send(pid.trim().parse::<u32>().expect("a pid"));
            }
        }
    });
    let child_pid = match rx.recv_timeout(LIMIT) {
        Ok(pid) => pid,
        Err(_) => {
            let _ = helper.kill();
            panic!("the helper never got ready");
        }
    };

    // Parent and child share the pages, and neither has a name for them.
    assert_eq!(shm_uses(helper_pid), Vec::<String>::new());
    assert_eq!(shm_uses(child_pid), Vec::<String>::new());
    assert!(anonymous_shared_mappings(child_pid) >= 4);

    kill(Pid::from_raw(helper_pid as i32), Signal::SIGKILL).expect("kill the helper");
    helper.wait().expect("reap the helper");
    assert!(
        testkit::wait_until_ended(child_pid as i32, LIMIT),
        "the child died with its parent"
    );
    assert_no_new_entries(&before);
}
