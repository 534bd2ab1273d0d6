//! The logging helper prints the fields of the wongwonggoods tutorial's format, in its order:
//! `%(asctime)s.%(msecs)s:%(name)s:%(thread)d:%(levelname)s:%(process)d:%(message)s`.

use std::time::Duration;

/// Splits a line into (asctime, msecs, name, thread, level, process, message).
fn fields(line: &str) -> (&str, &str, &str, i32, &str, i32, &str) {
    // asctime is `YYYY-MM-DD HH:MM:SS,mmm` (23 characters, with colons of
    // its own); the rest is colon-separated.
    let (asctime, rest) = line.split_at(23);
    let rest = rest.strip_prefix('.').expect("'.' after asctime");
    let mut parts = rest.splitn(6, ':');
    let mut next = || parts.next().expect("six fields after asctime");
    let (msecs, name, thread, level, process, message) =
        (next(), next(), next(), next(), next(), next());
    (
        asctime,
        msecs,
        name,
        thread.parse().unwrap(),
        level,
        process.parse().unwrap(),
        message,
    )
}

#[test]
fn lines_follow_the_seeds_format_in_parent_and_child() {
    let run = testkit::run(
        env!("CARGO_BIN_EXE_course-test-helper"),
        &["log"],
        Duration::from_secs(60),
    );
    run.assert_success();
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");

    let (asctime, msecs, name, thread, level, parent_pid, message) = fields(lines[0]);
    let bytes = asctime.as_bytes();
    assert!(
        bytes[4] == b'-' && bytes[10] == b' ' && bytes[13] == b':' && bytes[19] == b',',
        "{asctime}"
    );
    assert_eq!(
        msecs,
        format!("{}.0", asctime[20..].parse::<u32>().unwrap()),
        "msecs repeats the milliseconds"
    );
    assert_eq!(name, "course_test_helper");
    assert_eq!(level, "INFO");
    assert_eq!(message, "from the parent");
    assert_eq!(thread, parent_pid, "the main thread's id is the process id");

    let (_, _, _, child_thread, level, child_pid, message) = fields(lines[1]);
    assert_eq!((level, message), ("WARN", "from the child"));
    assert_ne!(child_pid, parent_pid, "the child logs its own pid");
    assert_eq!(child_thread, child_pid, "the child's only thread");
}

/// The wongwonggoods tutorial logs from a producer thread and a consumer process at once, so
/// a child may be forked while another thread is formatting a date. A
/// date formatted through glibc's local time takes its time-zone lock, and
/// a child forked while another thread holds it waits for ever. The helper
/// holds that very lock in a thread (`TZ` names a FIFO that glibc blocks
/// opening, under the lock), shows that a child's `localtime_r` hangs, and
/// that a child's log line does not.
#[test]
fn a_child_logs_while_another_thread_holds_the_time_zone_lock() {
    let dir = std::env::temp_dir().join(format!("mpcore-tz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("zone");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_course-test-helper"));
    command
        .arg("log-tz-held")
        .env("TZ", format!(":{}", fifo.display()));
    let run = testkit::run_command(&mut command, Duration::from_secs(60));
    std::fs::remove_dir_all(&dir).unwrap();

    run.assert_success();
    assert_eq!(
        run.lines(),
        [
            "localtime in a child: still waiting after 1 s",
            "logging in a child: returned"
        ],
        "stderr: {}",
        run.stderr
    );
    let logged: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(logged.len(), 1, "{logged:?}");
    let (.., level, _, message) = fields(logged[0]);
    assert_eq!(
        (level, message),
        ("INFO", "logged with the time-zone lock held")
    );
}
