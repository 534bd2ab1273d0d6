//! Runs a test's body in a fresh copy of the test binary, with a deadline.
//!
//! libtest runs tests on threads, and a `fork` from a process with threads
//! copies whatever locks those threads held (see the crate docs). A test
//! that forks, kills or hangs is safer alone: [`isolated!`] starts this
//! binary again with a filter that selects just that test, waits for it up
//! to [`LIMIT`], and kills it (failing the test) if it hangs.
//!
//! # How a test of this crate gets a process of its own
//!
//! There is one mechanism: a program started with a deadline
//! (`testkit::run_command`), which kills it, and fails the test, if it
//! hangs. What that program is depends on what the test needs:
//!
//! - a test body that must not fork inside libtest's threads: this test
//!   binary itself, filtered to that one test and run on one thread
//!   ([`isolated!`], here), so that the body stays a `#[test]` beside the
//!   others of its file;
//! - a scenario that is no test at all: a parent that the test kills from
//!   outside, output that libtest must not capture, a process that ignores
//!   `SIGCHLD` or lowers its limits for good: a scenario of the
//!   `mpcore-test-helper` binary (`src/bin/mpcore-test-helper/`).
//!
//! `testkit::within` gives no process of its own: it runs a body on a
//! thread of the test process under a deadline, for the tests that fork
//! simple children inside the harness, as the crate docs allow.
#![allow(dead_code, unused_macros)]

use std::process::Command;
use std::time::Duration;

/// Long enough for any test here on a slow, busy machine; only a hang
/// takes longer.
pub const LIMIT: Duration = Duration::from_secs(60);

const VAR: &str = "MPCORE_ISOLATED_TEST";

/// What a test body returns, so that `?` works in it.
pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Whether this process is the fresh copy started to run test `name`.
pub fn is_isolated(name: &str) -> bool {
    std::env::var(VAR).is_ok_and(|v| v == name)
}

/// Runs test `name` in a fresh copy of this test binary and fails unless
/// it passed there.
pub fn run(name: &str) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let run = testkit::run_command(
        Command::new(exe)
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(VAR, name),
        LIMIT,
    );
    print!("{}", run.stdout);
    eprint!("{}", run.stderr);
    assert!(
        run.status.success(),
        "test {name} failed in its own process"
    );
    assert!(
        run.stdout.contains("1 passed"),
        "test {name} did not run in its own process"
    );
}

/// `isolated! { fn name() { body } }`: a test whose body (returning
/// [`TestResult`]) runs in a process of its own, with a deadline.
macro_rules! isolated {
    ($( $(#[$meta:meta])* fn $name:ident() $body:block )*) => {$(
        $(#[$meta])*
        #[test]
        fn $name() -> isolate::TestResult {
            fn body() -> isolate::TestResult $body
            if isolate::is_isolated(stringify!($name)) {
                body()
            } else {
                isolate::run(stringify!($name));
                Ok(())
            }
        }
    )*};
}
