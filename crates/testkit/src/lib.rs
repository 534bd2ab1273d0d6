//! Test support shared by mpcore's tests and every demo's tests.
//!
//! Tests that involve other processes get deadlines here, so that a bug
//! fails the test instead of hanging CI: [`run`] kills a binary that runs
//! too long, [`within`] fails a test body that does.

// The package's `[lints]` (unsafe code forbidden) do not reach doc tests.
#![doc(test(attr(forbid(unsafe_code))))]

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// What a finished binary printed, and how it ended.
#[derive(Debug)]
pub struct Run {
    /// Its exit status.
    pub status: ExitStatus,
    /// Standard output (only the last MiB, if it printed more).
    pub stdout: String,
    /// Standard error (only the last MiB, if it printed more).
    pub stderr: String,
}

impl Run {
    /// Standard output, line by line.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// Panics with both streams unless the binary exited with status 0.
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.status.success(),
            "exited with {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `program` with `args` and returns what it printed. Kills it and
/// panics if it has not finished after `limit`.
pub fn run(program: &str, args: &[&str], limit: Duration) -> Run {
    run_command(Command::new(program).args(args), limit)
}

/// Like [`run`], for a command set up by the caller (environment, working
/// directory); its standard streams are replaced by pipes.
pub fn run_command(command: &mut Command, limit: Duration) -> Run {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {command:?}: {e}"));
    // Drain both pipes while waiting, so a chatty program never blocks.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = thread::spawn(move || read_tail(&mut stdout));
    let err = thread::spawn(move || read_tail(&mut stderr));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {limit:?}: a hang");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Run {
        status,
        stdout: String::from_utf8_lossy(&out.join().expect("stdout reader")).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().expect("stderr reader")).into_owned(),
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

/// Waits up to `limit` for `pid` to end; returns whether it did.
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

/// Starts `program` with `args`, which must print `child-pid N` for a
/// child of its own and then wait; checks that the child runs, kills the
/// program with SIGKILL, and returns whether the child then ended within
/// 10 s (no orphan left under init), with the child's pid.
pub fn child_dies_with_killed_parent(program: &str, args: &[&str]) -> (bool, i32) {
    let mut parent = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {program}: {e}"));
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(parent.stdout.take().expect("piped stdout")),
        &mut line,
    )
    .expect("the program's first line");
    let child_pid: i32 = line
        .trim()
        .strip_prefix("child-pid ")
        .unwrap_or_else(|| panic!("unexpected output {line:?}"))
        .parse()
        .expect("a pid");
    assert!(
        !has_ended(child_pid),
        "the child runs while its parent does"
    );
    parent.kill().expect("SIGKILL to the parent");
    parent.wait().expect("the parent reaped");
    (
        wait_until_ended(child_pid, Duration::from_secs(10)),
        child_pid,
    )
}

/// The pids of the live (not zombie) children of process `parent`.
pub fn live_children(parent: u32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
            ppid == Some(parent) && state != Some("Z")
        })
        .collect()
}

/// What process `pid` maps or has open under `/dev/shm`: named shared
/// memory, which outlives the process unless someone unlinks it.
pub fn shm_uses(pid: u32) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let mut uses: Vec<String> = maps
        .lines()
        .filter(|l| l.contains("/dev/shm"))
        .map(str::to_owned)
        .collect();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if target.starts_with("/dev/shm") {
                    uses.push(target.display().to_string());
                }
            }
        }
    }
    uses
}

/// How many shared mappings with no name in any file system process `pid`
/// has: anonymous ones (`MAP_SHARED | MAP_ANONYMOUS`, which the kernel
/// shows as `/dev/zero (deleted)`) and those of memfds (`/memfd:NAME
/// (deleted)`). Neither can be left behind when the process dies.
pub fn anonymous_shared_mappings(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.contains(" rw-s ")
                && (l.ends_with("/dev/zero (deleted)")
                    || (l.contains(" /memfd:") && l.ends_with(" (deleted)")))
        })
        .count()
}

/// The entries of `/dev/shm`, to compare before and after a run.
pub fn dev_shm_entries() -> std::collections::BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|dir| {
            dir.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The number of open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Runs example `example` of package `package` (`cargo run -p package
/// --example example -- args`) and returns what it printed. Cargo builds
/// it first if it is not built yet (`cargo test` has built it already:
/// it builds every example), so `limit` must leave room for a build.
/// The example's own output is what is returned; cargo's is kept quiet.
pub fn run_example(package: &str, example: &str, args: &[&str], limit: Duration) -> Run {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run_command(
        Command::new(cargo)
            .args(["run", "-q", "-p", package, "--example", example, "--"])
            .args(args),
        limit,
    )
}
