//! The tracker behind `SharedMemory`: one small process per program,
//! whatever the number of segments, holding none of the program's memory
//! or descriptors, removing each name when its last user is gone (killed
//! with SIGKILL or not), and never leaving a name behind when it cannot
//! start (a process limit).
//!
//! The programs are runs of the `mpcore-test-helper` binary (`named ...`
//! scenarios), each under a deadline.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const HELPER: &str = env!("CARGO_BIN_EXE_mpcore-test-helper");
const LIMIT: Duration = Duration::from_secs(60);
/// How long a name may outlive its last user: the tracker looks at least
/// once a second, and at once when a user closes the file.
const GONE_WITHIN: Duration = Duration::from_secs(10);

/// A helper run with piped streams, told what to do line by line.
struct Helper {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Helper {
    fn start(args: &[&str]) -> Helper {
        let mut child = Command::new(HELPER)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the helper");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Helper {
            child,
            stdin,
            lines,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(LIMIT)
            .expect("the helper printed nothing in time")
    }

    fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to the helper");
        stdin.flush().expect("flush");
    }

    fn kill(&mut self) {
        kill(Pid::from_raw(self.pid()), Signal::SIGKILL).expect("SIGKILL");
        self.child.wait().expect("reap the helper");
    }

    /// Closes its stdin and waits for it to end well.
    fn finish(mut self) {
        drop(self.stdin.take());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "the helper failed: {status:?}");
                return;
            }
            assert!(start.elapsed() < LIMIT, "the helper did not end in time");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fields after the command name in `/proc/<pid>/stat`.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

fn cmdline(pid: i32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/cmdline")).ok()
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The processes that track `program`'s segments: its live children (a
/// tracker started by exec), and any process but itself that runs with
/// its very command line (a tracker forked from it, wherever it went).
fn trackers_of(program: i32) -> Vec<i32> {
    let own = cmdline(program).expect("the program runs");
    all_pids()
        .into_iter()
        .filter(|&pid| pid != program)
        .filter(|&pid| {
            let Some(fields) = stat_fields(pid) else {
                return false;
            };
            let child =
                fields.get(1).map(String::as_str) == Some(&program.to_string()) && fields[0] != "Z";
            child || cmdline(pid).as_ref() == Some(&own)
        })
        .collect()
}

/// A line of `/proc/<pid>/status`, as a number (its first word).
fn status_field(pid: i32, name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Where each of `pid`'s descriptors leads.
fn fd_targets(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .map(|t| t.display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The names in `/dev/shm` that start with `prefix`.
fn names_left(prefix: &str) -> BTreeSet<String> {
    testkit::dev_shm_entries()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Waits until exactly `expected` of the names that start with `prefix`
/// are left (names only ever go), then checks that they stay a moment:
/// none went with a user still there.
fn wait_for_names(prefix: &str, expected: &BTreeSet<String>, when: &str) {
    let start = Instant::now();
    while names_left(prefix) != *expected && start.elapsed() < GONE_WITHIN {
        thread::sleep(Duration::from_millis(10));
    }
    let left = names_left(prefix);
    let missing: Vec<_> = expected.difference(&left).collect();
    let extra: Vec<_> = left.difference(expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{when}: {} names went while still in use ({missing:?}), {} outlived their last user \
         ({extra:?})",
        missing.len(),
        extra.len()
    );
    thread::sleep(Duration::from_millis(300));
    assert_eq!(names_left(prefix), *expected, "{when}: a name in use went");
}

fn remove_names(prefix: &str) {
    for name in names_left(prefix) {
        let _ = std::fs::remove_file(format!("/dev/shm/{name}"));
    }
}

/// Removes the names that start with its prefix when the test ends, passed
/// or failed: a failure must not leave names behind for the next run.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_names(&self.0);
    }
}

#[test]
fn a_thousand_segments_have_one_tracker_and_each_name_goes_with_its_last_user() {
    const N: usize = 1000;
    let prefix = format!("mpcore-test-many-{}", std::process::id());
    let _cleanup = Cleanup(prefix.clone());
    let named = |keep: &dyn Fn(usize) -> bool| -> BTreeSet<String> {
        (0..N)
            .filter(|&i| keep(i))
            .map(|i| format!("{prefix}-{i}"))
            .collect()
    };
    let mut creator = Helper::start(&["named", "many", &prefix, &N.to_string()]);
    assert_eq!(creator.next_line(), format!("created {N}"));

    // One tracker for the thousand segments, a small fresh process.
    let trackers = trackers_of(creator.pid());
    assert_eq!(trackers.len(), 1, "not one tracker: {trackers:?}");
    let tracker = trackers[0];
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{tracker}/comm"))
            .map(|c| c.trim().to_owned())
            .ok(),
        Some("mpcore-tracker".to_owned())
    );
    // The creator had 256 MiB in use when it made its first segment.
    let rss_kib = status_field(tracker, "VmRSS:").expect("the tracker's VmRSS");
    assert!(rss_kib < 64 << 10, "the tracker holds {rss_kib} KiB");
    // It holds one open of each segment, and none of the creator's
    // descriptors (such as the pipes of its standard streams).
    let creators: BTreeSet<String> = fd_targets(creator.pid())
        .into_iter()
        .filter(|t| !t.starts_with("/dev/shm/"))
        .collect();
    let start = Instant::now();
    let held = loop {
        let held = fd_targets(tracker);
        let segments = held.iter().filter(|t| t.starts_with("/dev/shm/")).count();
        if segments == N || start.elapsed() > GONE_WITHIN {
            break held;
        }
        thread::sleep(Duration::from_millis(10));
    };
    // (The tracker's opens were made before the files had names: they
    // show as `/dev/shm/#<inode> (deleted)`.)
    let segments = held.iter().filter(|t| t.starts_with("/dev/shm/")).count();
    let others: Vec<_> = held
        .iter()
        .filter(|t| !t.starts_with("/dev/shm/"))
        .collect();
    assert_eq!(
        segments, N,
        "the tracker holds {others:?} and {segments} segments"
    );
    let shared: Vec<_> = held.iter().filter(|t| creators.contains(*t)).collect();
    assert!(
        shared.is_empty(),
        "the tracker holds the creator's {shared:?}"
    );

    // A second program opens every tenth one: one tracker of its own.
    let mut reader = Helper::start(&["named", "open-many", &prefix, &N.to_string(), "10"]);
    assert_eq!(reader.next_line(), format!("opened {}", N / 10));
    assert_eq!(trackers_of(reader.pid()).len(), 1);
    let reader_tracker = trackers_of(reader.pid())[0];

    // The creator drops the even ones: those that only it used go.
    creator.say("drop-even");
    assert_eq!(creator.next_line(), format!("dropped {}", N / 2));
    wait_for_names(
        &prefix,
        &named(&|i| i % 2 == 1 || i % 10 == 0),
        "after the creator dropped the even ones",
    );

    // SIGKILL: the creator's own go; the reader's stay.
    creator.kill();
    wait_for_names(
        &prefix,
        &named(&|i| i % 10 == 0),
        "after the creator was killed",
    );

    // The last user killed: every name goes, and both trackers end.
    reader.kill();
    wait_for_names(&prefix, &BTreeSet::new(), "after the reader was killed");
    for pid in [tracker, reader_tracker] {
        assert!(
            testkit::wait_until_ended(pid, GONE_WITHIN),
            "tracker {pid} still runs with nothing to track"
        );
    }
}

#[test]
fn under_a_process_limit_create_fails_or_tracks_and_never_leaks_a_name() {
    // No room for a process: `create` fails, and leaves no name. Room for
    // one more: the tracker starts (a tracker that forks twice could not),
    // the name is tracked, and goes when the program ends.
    let mut said = Vec::new();
    for room in ["0", "1"] {
        let name = format!("mpcore-test-nproc{room}-{}", std::process::id());
        let _cleanup = Cleanup(name.clone());
        let run = testkit::run(HELPER, &["named", "nproc", &name, room], LIMIT);
        let start = Instant::now();
        while !names_left(&name).is_empty() && start.elapsed() < GONE_WITHIN {
            thread::sleep(Duration::from_millis(10));
        }
        let left = names_left(&name);
        run.assert_success();
        assert!(
            left.is_empty(),
            "room for {room} more: {left:?} left in /dev/shm"
        );
        said.push(run.stdout.trim().to_owned());
    }
    assert_eq!(
        said,
        [
            "result: error: start mpcore's shared memory tracker (a fresh run of this program) \
             failed: EAGAIN: Try again",
            "result: ok"
        ]
    );
}

#[test]
fn a_killed_tracker_is_reaped_and_replaced() {
    let prefix = format!("mpcore-test-tracker-killed-{}", std::process::id());
    let _cleanup = Cleanup(prefix.clone());
    let helper = Helper::start(&["named", "tracker-killed", &prefix]);
    assert_eq!(
        helper.next_line(),
        "reaped: yes",
        "a zombie tracker was left"
    );
    assert_eq!(helper.next_line(), "trackers: 1");
    helper.finish();
    // The second segment's name goes with its program; the first one's
    // tracker was killed, and with it what it knew (the documented limit).
    let b = BTreeSet::from([format!("{prefix}-a")]);
    wait_for_names(&prefix, &b, "after the program ended");
}

#[test]
fn a_forked_child_uses_its_parents_tracker() {
    let prefix = format!("mpcore-test-fork-child-{}", std::process::id());
    let _cleanup = Cleanup(prefix.clone());
    let helper = Helper::start(&["named", "fork-child", &prefix]);
    assert_eq!(helper.next_line(), "trackers: 1");
    helper.finish();
    wait_for_names(&prefix, &BTreeSet::new(), "after the program ended");
}

#[test]
fn sigterm_to_every_process_of_the_program_leaves_no_name() {
    let name = format!("mpcore-test-sigterm-{}", std::process::id());
    let _cleanup = Cleanup(name.clone());
    let mut helper = Helper::start(&["named", "create", &name]);
    assert_eq!(helper.next_line(), format!("created {name}"));

    // `killall -TERM`, `pkill`, `systemctl stop`: SIGTERM to every process
    // of the program, tracker included; a terminal that goes away adds
    // SIGHUP, a Ctrl-C SIGINT, a log rotation SIGUSR1.
    let mut processes = trackers_of(helper.pid());
    assert_eq!(processes.len(), 1, "not one tracker: {processes:?}");
    processes.push(helper.pid());
    for &pid in &processes {
        for signal in [
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGINT,
            Signal::SIGUSR1,
        ] {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }
    let status = helper.child.wait().expect("reap the helper");
    assert!(!status.success(), "SIGTERM ended the program: {status:?}");

    wait_for_names(&name, &BTreeSet::new(), "after SIGTERM");
    for pid in processes {
        assert!(
            testkit::wait_until_ended(pid, GONE_WITHIN),
            "process {pid} still runs with nothing to do"
        );
    }
}
