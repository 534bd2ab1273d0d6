//! mpcore's hook runs before `main` in every program that links mpcore.
//! Whatever mpcore's variables say, a program that mpcore did not start
//! runs its `main`, and only its `main`: no stray output, no exit before
//! it, no jump to a function that a variable names. A privileged run
//! (set-user-ID) ignores the variables and never sees them.
//!
//! The attacks are made by the helper binary (`attack VAR HOW TARGET`),
//! which starts `TARGET main-ran` with a hostile environment and prints how
//! it ended; the target prints `main ran`, whether it runs under secure
//! execution, and which of mpcore's variables its `main` sees.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const HELPER: &str = env!("CARGO_BIN_EXE_mpcore-test-helper");
const LIMIT: Duration = Duration::from_secs(60);
const CHILD_VAR: &str = "MPCORE_SPAWNED_CHILD";
const SERVER_VAR: &str = "MPCORE_FORKSERVER";

/// What the target and the attacker print when only `main` ran, with
/// `secure` as the target's `AT_SECURE`.
fn only_main_ran(secure: u32) -> String {
    format!("main ran\nsecure: {secure}\nmpcore variables: none\ntarget: exit 0\n")
}

/// Has `command` run as the user (and group) `uid`, with no other group.
fn as_user(command: &mut Command, uid: u32) {
    // SAFETY: the closure runs in the forked child before `exec`, and
    // makes three system calls, async-signal-safe, touching no memory but
    // its integer.
    unsafe {
        command.pre_exec(move || {
            if libc::setgroups(0, std::ptr::null()) == -1
                || libc::setgid(uid) == -1
                || libc::setuid(uid) == -1
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs `attacker attack VAR HOW target`, as the user `uid` if given.
fn attack(attacker: &Path, var: &str, how: &str, target: &Path, uid: Option<u32>) -> testkit::Run {
    let mut command = Command::new(attacker);
    command.arg("attack").arg(var).arg(how).arg(target);
    if let Some(uid) = uid {
        as_user(&mut command, uid);
    }
    testkit::run_command(&mut command, LIMIT)
}

/// What went otherwise than "only `main` ran", if anything.
fn not_only_main(run: &testkit::Run, secure: u32, what: &str) -> Option<String> {
    let seen = (run.stdout.as_str(), run.stderr.as_str(), run.status.code());
    (seen != (only_main_ran(secure).as_str(), "", Some(0))).then(|| {
        format!(
            "{what}: stdout {:?}, stderr {:?}, {}",
            seen.0, seen.1, run.status
        )
    })
}

/// Values that are no request of mpcore's, for either variable.
const GARBAGE: &[&str] = &[
    "",
    "garbage",
    "3",
    "3 1",
    " 3 1",
    "-1 -1",
    "1 1",
    "+3 +1",
    "4 abc",
    "99999 1",
    "99999999999999999999 1",
    "3 1 name with spaces",
];

fn hostile_values_leave_main_alone(var: &str, more: &[&str]) {
    let helper = Path::new(HELPER);
    let values = GARBAGE.iter().map(|value| format!("value:{value}"));
    let others = ["pipe", "stranger"]
        .iter()
        .chain(more)
        .map(|how| how.to_string());
    let failures: Vec<String> = values
        .chain(others)
        .filter_map(|how| {
            let run = attack(helper, var, &how, helper, None);
            not_only_main(&run, 0, &format!("{var} by {how:?}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "something other than main ran, or main did not:\n{}",
        failures.join("\n")
    );
}

#[test]
fn hostile_values_of_the_spawned_childs_variable_leave_main_alone() {
    // `steer`: a well-formed task from the target's own parent, whose
    // entry is a function that mpcore did not register.
    hostile_values_leave_main_alone(CHILD_VAR, &["steer"]);
}

#[test]
fn hostile_values_of_the_fork_servers_variable_leave_main_alone() {
    hostile_values_leave_main_alone(SERVER_VAR, &[]);
}

#[test]
fn a_request_whose_parent_has_died_ends_the_run_without_main() {
    // A genuine request (the socket's maker names itself, of our user),
    // whose maker has ended before the run's hook: the run has nothing to
    // do, and must not run `main` in the task's stead.
    let helper = Path::new(HELPER);
    for var in [CHILD_VAR, SERVER_VAR] {
        let run = attack(helper, var, "orphan", helper, None);
        assert_eq!(
            (run.stdout.as_str(), run.stderr.as_str(), run.status.code()),
            ("target: exit 0\n", "", Some(0)),
            "{var}"
        );
    }
}

/// A directory of this test's own under the system's temporary one,
/// removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("mpcore-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).expect("a temporary directory");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("a temporary directory others may enter");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A user of no account on this machine, for the attacker to run as.
const ATTACKER_UID: u32 = 54321;
/// `nobody`, who owns the set-user-ID copy.
const OWNER_UID: u32 = 65534;

/// In `dir`: a copy of the helper for the attacker to run, and a copy
/// that is set-user-ID `nobody`. `None` (and why, printed) if this test
/// cannot make them.
fn set_user_id_copies(dir: &TempDir) -> Option<(PathBuf, PathBuf)> {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: making a set-user-ID program for another user needs root");
        return None;
    }
    let attacker = dir.0.join("attacker");
    let target = dir.0.join("target");
    std::fs::copy(HELPER, &attacker).expect("a copy of the helper");
    std::fs::copy(HELPER, &target).expect("a copy of the helper");
    std::fs::set_permissions(&attacker, std::fs::Permissions::from_mode(0o755)).unwrap();
    nix::unistd::chown(&target, Some(OWNER_UID.into()), Some(OWNER_UID.into())).expect("chown");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o4755)).unwrap();
    Some((attacker, target))
}

/// Runs `program args` as the user `uid`.
fn run_as(uid: u32, program: &Path, args: &[&str]) -> testkit::Run {
    let mut command = Command::new(program);
    command.args(args);
    as_user(&mut command, uid);
    testkit::run_command(&mut command, LIMIT)
}

#[test]
fn a_set_user_id_run_ignores_and_removes_both_variables() {
    let dir = TempDir::new("setuid");
    let Some((attacker, target)) = set_user_id_copies(&dir) else {
        return;
    };
    // A well-formed request from the target's parent, of the target's
    // real user: all that keeps the hook shut is the privilege.
    let mut failures = Vec::new();
    for var in [CHILD_VAR, SERVER_VAR] {
        let run = attack(&attacker, var, "steer", &target, Some(ATTACKER_UID));
        if run.stdout.contains("secure: 0") {
            println!(
                "skipped: the file system of {} ignores set-user-ID bits (mounted nosuid?)",
                dir.0.display()
            );
            return;
        }
        failures.extend(not_only_main(
            &run,
            1,
            &format!("{var} in a set-user-ID run"),
        ));
    }
    assert!(
        failures.is_empty(),
        "something other than main ran, or main did not:\n{}",
        failures.join("\n")
    );
}

/// What a privileged program is told when it asks for a fresh run.
const PRIVILEGED: &str = "error: invalid argument: StartMethod::Spawn and ForkServer cannot \
     start a fresh run of a program that runs set-user-ID or set-group-ID, with file \
     capabilities, under secure execution, or with effective ids other than its real ones: that \
     run would be privileged, and mpcore's hook before main obeys no request there. Use \
     StartMethod::Fork\n";

#[test]
fn a_privileged_program_is_told_it_cannot_spawn() {
    let dir = TempDir::new("privileged");
    let Some((_, target)) = set_user_id_copies(&dir) else {
        return;
    };
    // Its fresh run would ignore the request and run `main` instead (here,
    // `spawn-square` again, and again).
    for method in ["spawn", "forkserver"] {
        let run = run_as(ATTACKER_UID, &target, &["spawn-square", method]);
        assert_eq!(
            (run.stdout.as_str(), run.stderr.as_str()),
            (PRIVILEGED, ""),
            "set-user-ID, {method}"
        );
    }
    // The same with file capabilities instead of the set-user-ID bit.
    let capable = dir.0.join("capable");
    std::fs::copy(HELPER, &capable).expect("a copy of the helper");
    let setcap = Command::new("setcap")
        .args(["cap_net_bind_service+ep"])
        .arg(&capable)
        .status();
    if !setcap.is_ok_and(|status| status.success()) {
        println!("skipped (file capabilities): setcap could not give the copy a capability");
        return;
    }
    let run = run_as(ATTACKER_UID, &capable, &["spawn-square", "spawn"]);
    assert_eq!(
        (run.stdout.as_str(), run.stderr.as_str()),
        (PRIVILEGED, ""),
        "file capabilities"
    );
}
