use std::collections::BTreeSet;
use std::time::Duration;

const DEMO: &str = env!("CARGO_BIN_EXE_pipe_demo");
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn prints_the_pipe_the_wait_and_the_listener_as_chapter_13_shows() {
    let run = testkit::run(DEMO, &[], LIMIT);
    run.assert_success();
    let lines = run.lines();
    assert_eq!(lines.len(), 14, "{lines:#?}");
    assert_eq!(
        lines[..5],
        [
            "a Pipe between a parent and a child:",
            "parent got (42, None, \"hello\")",
            "child got \"thanks\"",
            "recv after the child's exit: Disconnected",
            "wait over three children:",
        ]
    );
    // Each child once; 100 ms apart, they come 1, 2, 0 on any machine
    // that is not starved, but the test asks only that each comes once.
    let ready: BTreeSet<&str> = lines[5..8].iter().copied().collect();
    assert_eq!(
        ready,
        BTreeSet::from(["ready: 0", "ready: 1", "ready: 2"]),
        "{lines:#?}"
    );
    assert_eq!(
        lines[8..],
        [
            "a Listener with an authkey, and two Clients:",
            "socket file mode: 600 (owner only)",
            "client with key \"wrong\": authentication with the other side failed: \
             the listener refused our authentication key (the two keys differ)",
            "listener got \"hello from the client\"",
            "client got \"hello back\"",
            "socket file left after the listener: false",
        ]
    );
}

#[test]
fn two_programs_talk_through_a_named_socket_and_a_wrong_key_is_refused() {
    let dir = std::env::temp_dir().join(format!("pipe_demo_test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("demo.sock");
    let path_arg = path.to_str().unwrap().to_owned();
    let p = path_arg.clone();
    let listener = std::thread::spawn(move || testkit::run(DEMO, &["--listen", &p], LIMIT));
    let start = std::time::Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < LIMIT, "the listener never bound");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The file is there from `bind` on; `listen` follows a moment later,
    // and a connect in between is refused (ECONNREFUSED): try again then.
    let wrong = loop {
        let run = testkit::run(DEMO, &["--connect", &path_arg, "--key", "nope"], LIMIT);
        if !run.stderr.contains("ECONNREFUSED") {
            break run;
        }
        assert!(start.elapsed() < LIMIT, "the listener never listened");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!wrong.status.success());
    assert_eq!(
        wrong.stderr.trim_end(),
        "Error: authentication with the other side failed: the listener refused our \
         authentication key (the two keys differ)"
    );
    let right = testkit::run(DEMO, &["--connect", &path_arg], LIMIT);
    right.assert_success();
    assert_eq!(right.lines(), ["client got \"hello back\""]);
    let listener = listener.join().unwrap();
    listener.assert_success();
    assert_eq!(
        listener.lines(),
        [
            format!("listening on {path_arg}").as_str(),
            "listener got \"hello from the client\"",
        ]
    );
    assert!(!path.exists(), "the listener left its socket file");
    std::fs::remove_dir(&dir).unwrap();
}
