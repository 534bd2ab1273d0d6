use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_event_demo");
const LIMIT: Duration = Duration::from_secs(60);

/// A log line in the tutorial's format ends with `:<pid>:<message>`.
fn pid_and_message(line: &str) -> Option<(i32, &str)> {
    let mut fields = line.rsplitn(3, ':');
    let message = fields.next()?;
    let pid = fields.next()?.parse().ok()?;
    Some((pid, message))
}

fn pids_saying(stderr: &str, message: &str) -> Vec<i32> {
    stderr
        .lines()
        .filter_map(pid_and_message)
        .filter(|(_, m)| *m == message)
        .map(|(pid, _)| pid)
        .collect()
}

#[test]
fn producer_thread_and_consumer_process_work_until_stopped() {
    let run = testkit::run(BIN, &["--seconds", "2.5"], LIMIT);
    run.assert_success();
    let producer = pids_saying(&run.stderr, "Producer is working...");
    let consumer = pids_saying(&run.stderr, "Consumer is working...");
    // Once at the start and about once a second after: at least two each
    // (a busy machine may delay the third past the stop).
    assert!(producer.len() >= 2 && consumer.len() >= 2, "{}", run.stderr);
    let main_pid = pid_and_message(run.stderr.lines().last().unwrap())
        .unwrap()
        .0;
    assert!(
        producer.iter().all(|&p| p == main_pid),
        "the Producer is a thread of main's process"
    );
    assert!(
        consumer.iter().all(|&p| p != main_pid),
        "the Consumer is another process"
    );
    assert!(run.stderr.contains("time is up"));
    assert!(run.stderr.trim_end().ends_with("both stopped and joined"));
    assert!(testkit::has_ended(consumer[0]), "no Consumer left behind");
}

#[test]
fn thread_then_fork_never_hangs_in_many_short_runs() {
    // The tutorial starts the thread, then forks: if a lock the child needs
    // were held by the thread at that instant, the child would hang. Many
    // short runs give that instant many chances.
    let mut both = 0;
    for _ in 0..25 {
        let run = testkit::run(BIN, &["--seconds", "0.2"], LIMIT);
        run.assert_success();
        assert!(
            run.stderr.trim_end().ends_with("both stopped and joined"),
            "{}",
            run.stderr
        );
        let consumer = pids_saying(&run.stderr, "Consumer is working...");
        if !pids_saying(&run.stderr, "Producer is working...").is_empty() && !consumer.is_empty() {
            both += 1;
        }
        assert!(
            consumer.iter().all(|&p| testkit::has_ended(p)),
            "no Consumer left behind"
        );
    }
    println!("both logged in {both} of 25 runs of 0.2 s");
}

#[test]
fn ctrl_c_stops_both_cleanly() {
    let mut child = Command::new(BIN)
        .args(["--seconds", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group, like a job in a terminal: Ctrl-C goes to
        // every process in it, the Consumer too.
        .process_group(0)
        .spawn()
        .expect("start event_demo");
    let group = Pid::from_raw(child.id() as i32);
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    // Wait until both are working, then press Ctrl-C.
    let mut lines = Vec::new();
    let mut consumer_pid = None;
    let mut producer_seen = false;
    while consumer_pid.is_none() || !producer_seen {
        let Ok(line) = rx.recv_timeout(LIMIT) else {
            let _ = child.kill();
            panic!("event_demo never got going: {lines:#?}");
        };
        match pid_and_message(&line) {
            Some((pid, "Consumer is working...")) => consumer_pid = Some(pid),
            Some((_, "Producer is working...")) => producer_seen = true,
            _ => {}
        }
        lines.push(line);
    }
    killpg(group, Signal::SIGINT).expect("send SIGINT");

    // It must exit cleanly, well before its 60 s are up.
    while let Ok(line) = rx.recv_timeout(LIMIT) {
        lines.push(line);
    }
    let status = child.wait().expect("wait for event_demo");
    assert!(status.success(), "{status:?}: {lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("interrupted: stopping the Producer and the Consumer"))
    );
    assert!(lines.last().unwrap().ends_with("both stopped and joined"));
    let consumer_pid = consumer_pid.unwrap();
    assert!(
        testkit::wait_until_ended(consumer_pid, LIMIT),
        "the Consumer {consumer_pid} was left behind"
    );
}

#[test]
fn rejects_a_duration_that_is_not_one() {
    let run = testkit::run(BIN, &["--seconds=-1"], LIMIT);
    assert_eq!(run.status.code(), Some(2));
    assert!(run.stderr.contains("is not a duration"), "{}", run.stderr);
}
