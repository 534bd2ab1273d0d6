//! Process: values come back, failures are reported, nothing is left behind.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mpcore::process::Builder;
use mpcore::{Error, ExitStatus, Process};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use testkit::{has_ended, open_fds, proc_state, within};

const LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Report {
    name: String,
    scores: Vec<f64>,
    by_core: BTreeMap<u32, u128>,
    parent_pid: u32,
}

#[test]
fn join_returns_values_of_many_types() {
    within(LIMIT, || {
        let mut p = Process::spawn(|| 42u8).unwrap();
        assert_eq!(p.join().unwrap(), 42);

        let mut p = Process::spawn(|| -7i64).unwrap();
        assert_eq!(p.join().unwrap(), -7);

        // The tutorial's job for range(1000000), summed twice, needs u128.
        let mut p = Process::spawn(|| {
            (0..1_000_000u128)
                .map(|i| i + i * i + i * i * i)
                .sum::<u128>()
                * 2
        })
        .unwrap();
        assert_eq!(p.join().unwrap(), 499_999_666_667_166_666_000_000u128);

        let mut p = Process::spawn(|| format!("hello from {}", std::process::id())).unwrap();
        let child_pid = p.pid();
        assert_eq!(p.join().unwrap(), format!("hello from {child_pid}"));

        let mut p = Process::spawn(|| (0..1000).collect::<Vec<u32>>()).unwrap();
        assert_eq!(p.join().unwrap(), (0..1000).collect::<Vec<u32>>());

        let mut p = Process::spawn(|| Option::<String>::None).unwrap();
        assert_eq!(p.join().unwrap(), None);

        let parent_pid = std::process::id();
        let mut p = Process::spawn(|| Report {
            name: "core report".into(),
            scores: vec![0.5, 1.25],
            by_core: BTreeMap::from([(0, 1), (1, u128::MAX)]),
            parent_pid: nix::unistd::getppid().as_raw() as u32,
        })
        .unwrap();
        let report = p.join().unwrap();
        assert_eq!(report.by_core[&1], u128::MAX);
        assert_eq!(
            report.parent_pid, parent_pid,
            "the child's parent is this test"
        );
        assert_eq!(report.scores, vec![0.5, 1.25]);
    });
}

#[test]
fn a_result_of_tens_of_mib_comes_back_whole() {
    within(LIMIT, || {
        const LEN: usize = 48 << 20;
        let pattern = |i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8;
        let mut p = Process::spawn(move || (0..LEN).map(pattern).collect::<Vec<u8>>()).unwrap();
        let data = p.join().unwrap();
        assert_eq!(data.len(), LEN);
        assert!(data.iter().enumerate().all(|(i, &b)| b == pattern(i)));
    });
}

#[test]
fn the_child_changes_its_own_copy_of_what_it_was_given() {
    within(LIMIT, || {
        let words = String::from("fork copies memory");
        let mut p = Process::spawn({
            let mut words = words.clone();
            move || {
                words.make_ascii_uppercase();
                words
            }
        })
        .unwrap();
        assert_eq!(p.join().unwrap(), "FORK COPIES MEMORY");
        assert_eq!(
            words, "fork copies memory",
            "the parent's copy is untouched"
        );
    });
}

#[test]
fn a_panic_comes_back_with_its_message() {
    within(LIMIT, || {
        let mut p = Process::spawn(|| -> u32 { panic!("job {} failed", 7) }).unwrap();
        let err = p.join().unwrap_err();
        assert!(err.is_panic(), "{err:?}");
        assert_eq!(err.panic_message(), Some("job 7 failed"));
        assert_eq!(
            err.to_string(),
            format!("child process {} panicked: job 7 failed", p.pid())
        );
        assert_eq!(
            p.exitcode(),
            Some(1),
            "like Python, a failed child exits with 1"
        );
    });
}

#[test]
fn exit_without_a_result_gives_the_code() {
    within(LIMIT, || {
        let mut p = Process::spawn(|| -> u32 { std::process::exit(3) }).unwrap();
        let err = p.join().unwrap_err();
        assert_eq!(err.exit_code(), Some(3), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "child process {} exited with code 3 without sending a result",
                p.pid()
            )
        );
        assert_eq!(p.exit_status(), Some(ExitStatus::Code(3)));
    });
}

#[test]
fn a_child_killed_by_a_signal_reports_it() {
    within(LIMIT, || {
        let mut p = Process::spawn(|| -> u32 {
            nix::sys::signal::raise(Signal::SIGKILL).unwrap();
            unreachable!()
        })
        .unwrap();
        let err = p.join().unwrap_err();
        assert_eq!(err.signal(), Some(mpcore::Signal::SIGKILL), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("child process {} was killed by signal SIGKILL", p.pid())
        );
        assert_eq!(p.exitcode(), Some(-9));
    });
}

/// A result whose serialization stalls half-way, so that a test can kill
/// the child while mpcore is sending it.
#[derive(Debug, Deserialize)]
struct StallsWhileSending(Vec<u8>, Vec<u8>);

impl Serialize for StallsWhileSending {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTupleStruct;
        let mut fields = s.serialize_tuple_struct("StallsWhileSending", 2)?;
        fields.serialize_field(&self.0)?;
        std::thread::sleep(Duration::from_secs(300));
        fields.serialize_field(&self.1)?;
        fields.end()
    }
}

#[test]
fn a_child_killed_while_sending_reports_the_signal() {
    within(LIMIT, || {
        let mut p =
            Process::spawn(|| StallsWhileSending(vec![1; 1 << 20], vec![2; 1 << 20])).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(p.is_alive(), "stalled in the middle of sending");
        p.kill().unwrap();
        let err = p.join().unwrap_err();
        assert_eq!(err.signal(), Some(mpcore::Signal::SIGKILL), "{err:?}");
    });
}

#[test]
fn terminate_ends_a_sleeping_child() {
    within(LIMIT, || {
        let mut p = Process::spawn(|| std::thread::sleep(Duration::from_secs(300))).unwrap();
        assert!(p.is_alive());
        p.terminate().unwrap();
        let err = p.join().unwrap_err();
        assert_eq!(err.signal(), Some(mpcore::Signal::SIGTERM), "{err:?}");
        assert!(!p.is_alive());
        assert_eq!(p.exitcode(), Some(-15));
        // Once reaped, signalling is a no-op rather than a shot at a reused pid.
        p.kill().unwrap();
    });
}

#[test]
fn kill_ends_a_busy_child() {
    within(LIMIT, || {
        let mut p = Process::spawn(|| -> u32 {
            loop {
                std::hint::spin_loop();
            }
        })
        .unwrap();
        p.kill().unwrap();
        assert_eq!(
            p.join().unwrap_err().signal(),
            Some(mpcore::Signal::SIGKILL)
        );
    });
}

#[test]
fn join_timeout_times_out_then_join_still_works() {
    within(LIMIT, || {
        let mut p = Process::spawn(|| {
            std::thread::sleep(Duration::from_millis(700));
            "late".to_owned()
        })
        .unwrap();
        let started = Instant::now();
        let err = p.join_timeout(Duration::from_millis(100)).unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(err.is_timeout(), "{err:?}");
        assert_eq!(err.to_string(), "timed out after 100ms");
        assert!(p.is_alive());
        assert_eq!(p.join().unwrap(), "late");
    });
}

/// Waits until `pid` is a zombie: it has exited and is not reaped yet.
fn wait_until_exited(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while proc_state(pid) != Some('Z') {
        assert!(Instant::now() < deadline, "child {pid} never exited");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn join_timeout_zero_returns_a_result_that_is_already_there() {
    within(LIMIT, || {
        // Python's polling loop `while p.exitcode is None: p.join(0)`: a
        // zero timeout must look at the child before it gives up.
        let mut p = Process::spawn(|| 42u32).unwrap();
        wait_until_exited(p.pid());
        assert_eq!(p.join_timeout(Duration::ZERO).unwrap(), 42);
        assert_eq!(p.exitcode(), Some(0));

        let mut running = Process::spawn(|| std::thread::sleep(Duration::from_secs(300))).unwrap();
        let err = running.join_timeout(Duration::ZERO).unwrap_err();
        assert_eq!(err.to_string(), "timed out after 0ns");
        running.kill().unwrap();
    });
}

#[test]
fn a_second_join_is_an_error_not_a_hang() {
    within(LIMIT, || {
        let mut p = Process::spawn(|| 1u8).unwrap();
        assert_eq!(p.join().unwrap(), 1);
        assert!(matches!(p.join(), Err(Error::AlreadyJoined { .. })));
    });
}

#[test]
fn after_join_the_child_is_reaped() {
    within(LIMIT, || {
        let mut p = Process::spawn(|| 5u8).unwrap();
        let pid = p.pid();
        p.join().unwrap();
        assert_eq!(proc_state(pid), None, "/proc/{pid} is gone: no zombie");
    });
}

#[test]
fn dropping_a_daemon_kills_and_reaps_it() {
    within(LIMIT, || {
        let p = Builder::new()
            .daemon(true)
            .spawn(|| std::thread::sleep(Duration::from_secs(300)))
            .unwrap();
        let pid = p.pid();
        drop(p);
        assert_eq!(proc_state(pid), None, "killed and reaped, not a zombie");
    });
}

#[test]
fn dropping_a_non_daemon_waits_for_it() {
    within(LIMIT, || {
        let marker = std::env::temp_dir().join(format!("mpcore-drop-{}", std::process::id()));
        let path = marker.clone();
        let p = Process::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            std::fs::write(&path, b"done").unwrap();
        })
        .unwrap();
        let pid = p.pid();
        drop(p);
        assert_eq!(proc_state(pid), None, "waited for and reaped");
        assert_eq!(
            std::fs::read(&marker).unwrap(),
            b"done",
            "it ran to the end"
        );
        std::fs::remove_file(marker).unwrap();
    });
}

#[test]
fn names_default_like_python_and_can_be_set() {
    within(LIMIT, || {
        let mut p = Process::spawn(|| ()).unwrap();
        assert!(p.name().starts_with("Process-"), "{}", p.name());
        p.join().unwrap();
        let mut q = Builder::new().name("Consumer").spawn(|| ()).unwrap();
        assert_eq!(q.name(), "Consumer");
        assert!(!q.is_daemon());
        q.join().unwrap();
    });
}

#[test]
fn spawning_many_leaks_no_descriptor_and_no_child() {
    within(LIMIT, || {
        let before = open_fds();
        let mut pids = Vec::new();
        for i in 0..50u32 {
            let mut p = Process::spawn(move || i * 2).unwrap();
            pids.push(p.pid());
            assert_eq!(p.join().unwrap(), i * 2);
        }
        assert!(pids.iter().all(|&pid| has_ended(pid)));
        // Other tests run on other threads and open descriptors too, so
        // allow a little slack; a leak would be 100 or more.
        assert!(
            open_fds() < before + 20,
            "before {before}, after {}",
            open_fds()
        );
    });
}

#[test]
fn a_child_dies_with_its_parent() {
    let (ended, child_pid) = testkit::child_dies_with_killed_parent(
        env!("CARGO_BIN_EXE_mpcore-test-helper"),
        &["orphan"],
    );
    assert!(
        ended,
        "the child {child_pid} outlived its killed parent: an orphan"
    );
}

#[test]
fn output_buffered_before_a_spawn_is_printed_once() {
    // A process with one thread forks without taking the std streams'
    // locks, but still flushes: the child must not print the parent's
    // half line again, and must flush its own before it exits.
    let out = testkit::run(
        env!("CARGO_BIN_EXE_mpcore-test-helper"),
        &["buffered"],
        Duration::from_secs(60),
    );
    out.assert_success();
    assert_eq!(
        out.stdout,
        "parent-0 child-0 parent-1 child-1 parent-2 child-2 parent-end\n"
    );
}

#[test]
fn forking_while_another_thread_prints_never_deadlocks() {
    // In a process of its own: the test harness captures output through a
    // lock of its own, which is not the std stream lock that spawn holds.
    let out = testkit::run(
        env!("CARGO_BIN_EXE_mpcore-test-helper"),
        &["print-storm", "200"],
        Duration::from_secs(120),
    );
    out.assert_success();
    // The printer goes on printing until the helper exits, so the line
    // need not be among the last ones; it must be there, and whole.
    let lines = out.lines();
    assert!(
        lines.contains(&"joined 200"),
        "no 'joined 200' line; the last lines: {:?}",
        &lines[lines.len().saturating_sub(5)..]
    );
}

/// Runs the helper's `unwind KIND` scenario and returns its output.
fn unwind_scenario(kind: &str) -> String {
    let out = testkit::run(
        env!("CARGO_BIN_EXE_mpcore-test-helper"),
        &["unwind", kind],
        Duration::from_secs(60),
    );
    out.assert_success();
    out.stdout
}

#[test]
fn a_result_whose_serialize_panics_never_unwinds_into_the_parents_code() {
    // One line from the parent's join, and the daemon sibling untouched:
    // a child that unwound out of `spawn` would have run the helper's
    // `main` on, and killed the sibling as it dropped the handle.
    assert_eq!(
        unwind_scenario("serialize"),
        "result: the result panicked while it was being serialized: \
         this value refuses to be serialized\nsibling: alive\n"
    );
}

#[test]
fn a_result_whose_drop_panics_in_the_child_is_reported_as_a_panic() {
    assert_eq!(
        unwind_scenario("drop-result"),
        "result: the result's destructor panicked after it was serialized: \
         this value refuses to be dropped in a child\nsibling: alive\n"
    );
}

#[test]
fn a_panic_payload_whose_drop_panics_never_unwinds_into_the_parents_code() {
    assert_eq!(
        unwind_scenario("drop-payload"),
        "result: a panic with a payload that is not a string\nsibling: alive\n"
    );
}

#[test]
fn a_copy_of_a_handle_in_a_forked_child_neither_signals_nor_waits() {
    within(LIMIT, || {
        // Leaked, so that the child's closure may refer to it and still be
        // 'static; the child sees its own copy of the memory.
        let sibling: &'static std::sync::Mutex<Option<Process<()>>> =
            Box::leak(Box::new(std::sync::Mutex::new(Some(
                Builder::new()
                    .daemon(true)
                    .spawn(|| std::thread::sleep(Duration::from_secs(300)))
                    .unwrap(),
            ))));
        let sibling_pid = sibling.lock().unwrap().as_ref().unwrap().pid();
        let mut child = Process::spawn(move || {
            let mut copy = sibling.lock().unwrap().take().unwrap();
            let answers = [
                copy.kill().map_err(|e| e.to_string()),
                copy.terminate().map_err(|e| e.to_string()),
                copy.join().map_err(|e| e.to_string()),
            ];
            let alive = copy.is_alive();
            drop(copy); // a daemon's handle: the parent's copy would kill
            (answers, alive)
        })
        .unwrap();
        let (answers, alive_in_child) = child.join().unwrap();
        let parent = std::process::id();
        for (answer, action) in answers.iter().zip(["kill", "terminate", "join"]) {
            assert_eq!(
                answer,
                &Err(format!(
                    "child process {sibling_pid} was started by process {parent}; this copy of \
                     its handle is in another process (a fork), which cannot {action} it: \
                     do that in process {parent}"
                ))
            );
        }
        assert!(alive_in_child);
        let mut sibling = sibling.lock().unwrap().take().unwrap();
        assert!(sibling.is_alive(), "the child's copy signalled the sibling");
        sibling.kill().unwrap();
        assert_eq!(
            sibling.join().unwrap_err().signal(),
            Some(mpcore::Signal::SIGKILL),
            "the child's copy reaped the sibling or took its status"
        );
    });
}

#[test]
fn when_the_kernel_reaps_children_join_still_returns_what_was_sent() {
    // SIGCHLD set to SIG_IGN, in a process of its own: the kernel then
    // reaps every child as it exits, and keeps no exit status.
    let out = testkit::run(
        env!("CARGO_BIN_EXE_mpcore-test-helper"),
        &["sigchld-ignored"],
        Duration::from_secs(60),
    );
    out.assert_success();
    let lines = out.lines();
    assert_eq!(
        lines[..4],
        [
            "join: Ok(42)",
            "ended: is_alive false exitcode None exit_status None",
            "kill: Ok(()) terminate: Ok(())",
            "join: Ok(5)",
        ]
    );
    let last = lines[4];
    assert!(
        last.starts_with("join: Err(child process ")
            && last.ends_with(
                " ended without sending a result, and something else reaped it \
                 (is SIGCHLD ignored?), so how it ended is unknown)"
            ),
        "{last}"
    );
    assert_eq!(lines.len(), 5, "{}", out.stdout);
}

#[test]
fn exit_zero_in_a_unit_process_is_success_as_in_python() {
    within(LIMIT, || {
        let mut p = Process::spawn(|| -> () { std::process::exit(0) }).unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));

        // With a value to return, exit(0) returned none: still an error.
        let mut p = Process::spawn(|| -> u32 { std::process::exit(0) }).unwrap();
        let err = p.join().unwrap_err();
        assert_eq!(err.exit_code(), Some(0), "{err:?}");
    });
}
