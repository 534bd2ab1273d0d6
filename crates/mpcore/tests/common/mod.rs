//! Deadlines for tests that involve other processes: a bug fails the test
//! instead of hanging CI.
#![allow(dead_code)] // each test file uses its own subset

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Runs `body` on a thread of its own and fails the test if it has not
/// finished after `limit`. A panic in `body` fails the test with its message.
pub fn within<T: Send + 'static>(limit: Duration, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        let _ = tx.send(body());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => {
            worker.join().expect("the test body's thread ended cleanly");
            value
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the body returned without sending"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("test did not finish within {limit:?}: a hang")
        }
    }
}

/// Runs the helper binary with `args` and returns its output, killing it
/// and failing the test if it runs longer than `limit`.
pub fn run_helper(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mpcore-test-helper"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mpcore-test-helper");
    // Drain both pipes while waiting, so a chatty helper never blocks.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || read_tail(&mut stdout));
    let err = thread::spawn(move || read_tail(&mut stderr));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for helper") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mpcore-test-helper {args:?} did not finish within {limit:?}: a hang");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Reads `r` to the end, keeping only its last MiB: a printing storm may
/// write gigabytes, and only its end is checked.
fn read_tail(r: &mut impl Read) -> Vec<u8> {
    const KEEP: usize = 1 << 20;
    let mut kept = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    loop {
        match r.read(&mut chunk) {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                kept.extend_from_slice(&chunk[..n]);
                if kept.len() > 2 * KEEP {
                    kept.drain(..kept.len() - KEEP);
                }
            }
        }
    }
}

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `Z`, ...), or `None`
/// when there is no such process any more.
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces; the state
    // follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Whether `pid` has ended: gone, or a zombie waiting for a reaper that is
/// not us (after reparenting, that is init's job).
pub fn has_ended(pid: i32) -> bool {
    matches!(proc_state(pid), None | Some('Z') | Some('X'))
}

/// Waits up to `limit` for `pid` to end.
pub fn wait_until_ended(pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if has_ended(pid) {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    has_ended(pid)
}

/// The number of open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}
