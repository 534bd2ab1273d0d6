//! Runs a test's body in a fresh copy of the test binary, with a deadline.
//!
//! libtest runs tests on threads, and a `fork` from a process with threads
//! copies whatever locks those threads held (see the crate docs). A test
//! that forks, kills or hangs is safer alone: [`isolated!`] starts this
//! binary again with a filter that selects just that test, waits for it up
//! to [`LIMIT`], and kills it (failing the test) if it hangs.
//!
//! Scenarios that are not tests at all (a parent that must be killed from
//! outside) live in the `mpcore-test-helper` binary instead.
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
