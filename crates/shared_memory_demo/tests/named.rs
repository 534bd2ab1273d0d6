//! `shared_memory_named`: a writer and a reader, two programs started
//! separately, share a segment by its name; nothing is left in `/dev/shm`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_shared_memory_named");
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn a_reader_started_on_its_own_changes_what_the_writer_reads() {
    let name = format!("shared-memory-demo-test-{}", std::process::id());
    let mut writer = Command::new(BIN)
        .args(["write", &name, "50"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the writer");
    let (tx, lines) = mpsc::channel();
    let stdout = writer.stdout.take().expect("piped");
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut writer_lines = Vec::new();
    while writer_lines.last().map(String::as_str) != Some("writer: waiting for a reader") {
        writer_lines.push(lines.recv_timeout(LIMIT).expect("the writer's first lines"));
    }

    let reader = testkit::run(BIN, &["read", &name], LIMIT);
    reader.assert_success();
    assert_eq!(
        reader.lines(),
        [
            "reader: value1 = 0, value2 = 3.14, array = [1, 2, 3, 4]",
            "reader: value1 = 1, value2 = 6.28, array = [1, 4, 9, 16]",
        ]
    );

    let start = Instant::now();
    let status = loop {
        if let Some(status) = writer.try_wait().expect("wait") {
            break status;
        }
        assert!(start.elapsed() < LIMIT, "the writer did not end");
        thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
    writer_lines.extend(lines.iter());
    assert_eq!(
        writer_lines,
        [
            format!("writer: created /dev/shm/{name} (32 bytes)"),
            "writer: value1 = 0, value2 = 3.14, array = [1, 2, 3, 4]".to_owned(),
            "writer: waiting for a reader".to_owned(),
            "writer: value1 = 1, value2 = 6.28, array = [1, 4, 9, 16]".to_owned(),
        ]
    );
    let start = Instant::now();
    while Path::new(&format!("/dev/shm/{name}")).exists() {
        assert!(start.elapsed() < LIMIT, "/dev/shm/{name} was left behind");
        thread::sleep(Duration::from_millis(10));
    }
}
