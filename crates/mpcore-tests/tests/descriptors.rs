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
    // 1 MiB, its length (3 bytes) and, for a result, its outcome's tag.
    let kept = no_room(
        1048580,
        "the message is kept: close some files or raise the limit (ulimit -n), then try again",
    );
    let lost = |bytes| {
        no_room(
            bytes,
            "the kernel dropped its memory, so the message is lost: close some files or \
             raise the limit (ulimit -n)",
        )
    };
    assert_eq!(
        run.lines(),
        [
            // The process's result stays in its socket until there is room.
            format!("process: {kept}").as_str(),
            format!("process again: {kept}").as_str(),
            // The pool's one task fails with the real cause...
            format!("pool: {}", lost(1048580)).as_str(),
            // A queue's items wait in shared memory: it needs no descriptor.
            "queue: Ok(true)",
            "process after: true",
            // ...and the pool goes on, with the workers it had.
            "pool after: true",
            "same workers: true",
        ]
    );
}

/// `NoFreeDescriptor`'s text for a message of `bytes` bytes.
fn no_room(bytes: u64, then: &str) -> String {
    format!(
        "a message of {bytes} bytes arrived, but this process has no free file descriptor to \
         receive its memory with (too many open files, EMFILE); {then}"
    )
}

#[test]
fn a_pool_waits_out_a_moment_when_no_worker_can_be_forked() {
    let run = testkit::run(HELPER, &["fork-retry"], LIMIT);
    run.assert_success();
    assert_eq!(run.lines(), ["first: Ok(2)", "second: Ok(3)"]);
}

/// Fills the worker's descriptor table for good (a leak on purpose), then
/// returns more than a packet carries: the worker has no descriptor left
/// for the memfd its result needs.
fn fill_the_worker_and_return_1_mib(_: ()) -> Vec<u8> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, 64.min(hard), hard).unwrap();
    while let Ok(file) = std::fs::File::open("/dev/null") {
        std::mem::forget(file);
    }
    vec![1; 1 << 20]
}

fn plus_one(x: u32) -> u32 {
    x + 1
}

#[test]
fn a_worker_that_cannot_send_a_result_says_so_and_stays() {
    testkit::within(LIMIT, || {
        let pool = mpcore::Pool::new(1).unwrap();
        let pids = pool.pids();
        let e = pool
            .apply(fill_the_worker_and_return_1_mib, ())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "pool worker {} ran this task but could not send its result back \
                 (memfd_create failed: EMFILE: Too many open files); the task may have had \
                 effects: if its result was large, free what is short (memory, open files in \
                 the worker) and run it again",
                pids[0]
            )
        );
        // The worker goes on with small results, which need no descriptor.
        assert_eq!(pool.apply(plus_one, 41).unwrap(), 42);
        assert_eq!(pool.pids(), pids);
    });
}
