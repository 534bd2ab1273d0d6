//! What only `StartMethod::ForkServer` does: one server process, a fresh
//! `exec` of this test binary started on first use, forks every child, and
//! dies with the program. What it shares with `StartMethod::Spawn` runs
//! under both in `tests/start_methods.rs`.

use std::time::Duration;

use mpcore::StartMethod;
use mpcore::process::Builder;
use testkit::{wait_until_ended, within};

const LIMIT: Duration = Duration::from_secs(30);

fn by_server() -> Builder {
    Builder::new().start_method(StartMethod::ForkServer)
}

/// The parent process of `pid`, from `/proc`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn square(x: u64) -> u64 {
    x * x
}

/// This process's parent: for a fork-server child, the server.
fn parent_pid(_: ()) -> u32 {
    std::os::unix::process::parent_id()
}

#[test]
fn one_server_forks_every_child_and_it_is_a_child_of_the_program() {
    within(LIMIT, || {
        let servers: Vec<u32> = (0..3)
            .map(|_| {
                by_server()
                    .spawn_fn(parent_pid, ())
                    .unwrap()
                    .join()
                    .unwrap()
            })
            .collect();
        assert_eq!(servers[0], servers[1]);
        assert_eq!(servers[1], servers[2]);
        assert_ne!(servers[0], std::process::id());
        assert_eq!(parent_of(servers[0]), Some(std::process::id()));
    });
}

/// Has a fork server of its own start a grandchild that squares `x`; also
/// says whether a variable of mpcore's is left in this child's environment.
fn start_a_grandchild(x: u64) -> (u64, bool) {
    let marked = std::env::vars_os()
        .any(|(name, _)| name == "MPCORE_FORKSERVER" || name == "MPCORE_SPAWNED_CHILD");
    (
        by_server().spawn_fn(square, x).unwrap().join().unwrap(),
        marked,
    )
}

#[test]
fn a_fork_server_child_can_use_a_fork_server_in_turn_and_has_no_mark() {
    within(LIMIT, || {
        let mut p = by_server().spawn_fn(start_a_grandchild, 9).unwrap();
        assert_eq!(p.join().unwrap(), (81, false));
    });
}

#[test]
fn killing_the_program_leaves_neither_the_server_nor_its_children() {
    use std::io::BufRead;
    let mut program = std::process::Command::new(env!("CARGO_BIN_EXE_mpcore-test-helper"))
        .args(["orphan", "forkserver"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(program.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let child: i32 = line
        .trim()
        .strip_prefix("child-pid ")
        .unwrap_or_else(|| panic!("unexpected output {line:?}"))
        .parse()
        .unwrap();
    let server = parent_of(child as u32).expect("the child runs") as i32;
    assert_eq!(parent_of(server as u32), Some(program.id()));
    program.kill().unwrap();
    program.wait().unwrap();
    assert!(
        wait_until_ended(server, Duration::from_secs(10)),
        "the fork server {server} outlived its killed program"
    );
    assert!(
        wait_until_ended(child, Duration::from_secs(10)),
        "the fork server's child {child} outlived its killed program: an orphan"
    );
}

#[test]
fn a_killed_server_fails_its_childs_join_and_the_next_request_starts_a_new_one() {
    let run = testkit::run(
        env!("CARGO_BIN_EXE_mpcore-test-helper"),
        &["forkserver-killed"],
        LIMIT,
    );
    run.assert_success();
    assert_eq!(
        run.lines(),
        [
            "sleeper: child process N ended without sending a result, and the fork server that \
             started it died before reporting how it ended (was the server killed?)",
            "sleeper alive: false",
            "new server: true",
            "new server is ours: true",
            "old server reaped: true",
        ]
    );
}

#[test]
fn a_program_that_ignores_sigchld_still_learns_how_each_child_ended() {
    let run = testkit::run(
        env!("CARGO_BIN_EXE_mpcore-test-helper"),
        &["forkserver-sigchld-ignored"],
        LIMIT,
    );
    run.assert_success();
    assert_eq!(
        run.lines(),
        [
            "join: Err(\"child process N exited with code 3 without sending a result\") exitcode Some(3)",
            "exitcode Some(5)",
            "killed: exitcode Some(-9)",
        ]
    );
}

/// Has the fork server start a child that reports its server; returns
/// that server and this process's pid.
fn server_of_a_grandchild(_: ()) -> (u32, u32) {
    let server = by_server()
        .spawn_fn(parent_pid, ())
        .unwrap()
        .join()
        .unwrap();
    (server, std::process::id())
}

#[test]
fn a_forked_child_starts_a_fork_server_of_its_own() {
    within(LIMIT, || {
        let ours = by_server()
            .spawn_fn(parent_pid, ())
            .unwrap()
            .join()
            .unwrap();
        let mut forked = Builder::new()
            .start_method(StartMethod::Fork)
            .spawn_fn(server_of_a_grandchild, ())
            .unwrap();
        let (theirs, forked_pid) = forked.join().unwrap();
        assert_eq!(forked_pid, forked.pid() as u32);
        assert_ne!(theirs, ours, "a forked child used its parent's server");
        // Ours still serves.
        let again = by_server()
            .spawn_fn(parent_pid, ())
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(again, ours);
    });
}

/// A directory of its own under the temporary directory, removed when
/// dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("mpcore-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_fork_server_child_never_has_privileges_the_program_dropped() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: only root can drop its privileges");
        return;
    }
    // Only root may write in it; the helper drops to nobody.
    let dir = TempDir::new("root-only");
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let run = testkit::run(
        env!("CARGO_BIN_EXE_mpcore-test-helper"),
        &["forkserver-drop", dir.path()],
        LIMIT,
    );
    run.assert_success();
    assert_eq!(
        run.lines(),
        [
            "before the drop: euid 0, write into the root-only directory: written",
            "pool before the drop: [0, 1, 4, 9]",
            "after the drop: euid is nobody's: true, egid is nobody's: true, groups: [], \
             write into the root-only directory: permission denied",
            "kill: Ok(()), join: Err(child process N was killed by signal SIGKILL)",
            "terminate: Ok(()), join: Err(child process N was killed by signal SIGTERM)",
            "pool dropped within 20 s: true",
            "idle fork pool dropped within 20 s: true",
            "busy fork pool dropped within 20 s: true",
            "busy worker reaped when its task ended: true",
        ]
    );
    assert!(!dir.0.join("written-by-a-child").exists());
}

#[test]
fn a_request_the_server_has_no_descriptors_for_fails_alone_and_says_why() {
    let run = testkit::run(
        env!("CARGO_BIN_EXE_mpcore-test-helper"),
        &["forkserver-fd-limit"],
        LIMIT,
    );
    run.assert_success();
    let lines = run.lines();
    assert_eq!(
        lines[..2],
        [
            "started with a low limit: some started: true, all started joined with their \
             values: true",
            "started with a low limit: failed: 0",
        ],
        "{}",
        run.stdout
    );
    assert_eq!(
        lines[2..],
        [
            "no room: some started: true, all started joined with their values: true",
            lines[3],
            "no room: error: fork server request failed: EMFILE: Too many open files",
            "the same server still serves: true",
        ],
        "{}",
        run.stdout
    );
    let failed: usize = lines[3]
        .strip_prefix("no room: failed: ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line {:?}", lines[3]));
    assert!(failed > 0 && failed < 40, "{failed} of 40 failed");
}

#[test]
fn a_fork_server_child_runs_in_the_requesters_working_directory() {
    let dir = TempDir::new("cwd");
    let run = testkit::run(
        env!("CARGO_BIN_EXE_mpcore-test-helper"),
        &["forkserver-cwd", dir.path()],
        LIMIT,
    );
    run.assert_success();
    assert_eq!(
        run.lines(),
        [
            "the child's directory is the new one: true",
            "the file is in the new directory: true",
            "the file is in the old directory: false",
        ]
    );
}

/// The children of `pid` that are zombies, from `/proc`.
fn zombie_children_of(pid: u32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| parent_of(p as u32) == Some(pid) && testkit::proc_state(p) == Some('Z'))
        .collect()
}

#[test]
fn a_killed_server_is_reaped_at_once() {
    use std::io::{BufRead, Write};
    let mut program = std::process::Command::new(env!("CARGO_BIN_EXE_mpcore-test-helper"))
        .arg("forkserver-zombie")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(program.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let server: i32 = line
        .trim()
        .strip_prefix("server ")
        .unwrap_or_else(|| panic!("unexpected output {line:?}"))
        .parse()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while testkit::proc_state(server).is_some() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let state = testkit::proc_state(server);
    let zombies = zombie_children_of(program.id());
    let _ = program.stdin.take().unwrap().write_all(b"done\n");
    let ended = within(LIMIT, move || program.wait().unwrap());
    assert!(ended.success());
    assert_eq!(state, None, "the killed server {server} was not reaped");
    assert_eq!(zombies, Vec::<i32>::new(), "zombie children of the program");
}
