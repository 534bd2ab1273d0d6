//! A process whose descriptor table is full: a large message (its bytes
//! travel in a memfd) cannot be received, and a worker cannot be forked.
//! The errors must name that cause, go to the caller that asked, and cost
//! no more than the task affected. Each scenario runs in the helper
//! binary, which lowers its own open-file limit, under a deadline.

use std::time::Duration;

const HELPER: &str = env!("CARGO_BIN_EXE_mpcore-test-helper");
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn a_large_result_with_no_free_descriptor_fails_with_that_cause_and_nothing_else() {
    let run = testkit::run(HELPER, &["no-free-fd"], LIMIT);
    run.assert_success();
    let kept = "a message of 1048580 bytes arrived, but this process has no free file \
                descriptor to receive its memory with (too many open files, EMFILE); the \
                message is kept: close some files or raise the limit (ulimit -n), then try again";
    let lost = "a message of 1048580 bytes arrived, but this process has no free file \
                descriptor to receive its memory with (too many open files, EMFILE); the \
                kernel dropped its memory, so the message is lost: close some files or raise \
                the limit (ulimit -n)";
    assert_eq!(
        run.lines(),
        [
            // The process's result stays in its socket until there is room.
            format!("process: {kept}").as_str(),
            format!("process again: {kept}").as_str(),
            // The pool's one task fails with the real cause...
            format!("pool: {lost}").as_str(),
            "process after: true",
            // ...and the pool goes on, with the workers it had.
            "pool after: true",
            "same workers: true",
        ]
    );
}

#[test]
fn a_pool_waits_out_a_moment_when_no_worker_can_be_forked() {
    let run = testkit::run(HELPER, &["fork-retry"], LIMIT);
    run.assert_success();
    assert_eq!(run.lines(), ["first: Ok(2)", "second: Ok(3)"]);
}
