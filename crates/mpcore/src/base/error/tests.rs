//! The error messages, read as sentences.

use super::*;

#[test]
fn a_pool_with_no_worker_says_for_how_long_it_tried_and_why() {
    let e = Error::NoWorker {
        tried: Duration::from_secs(2),
        reason: "socketpair failed: EMFILE: Too many open files".to_owned(),
    };
    assert_eq!(
        e.to_string(),
        "the pool has no worker left and could not start one for 2s (socketpair failed: \
         EMFILE: Too many open files), so this task did not run: free what is short \
         (processes, open files, memory) and submit it again"
    );
}

#[test]
fn a_supervisor_panic_is_not_blamed_on_a_child_process() {
    let e = Error::SupervisorPanicked {
        message: "index out of bounds".to_owned(),
    };
    assert_eq!(
        e.to_string(),
        "the pool's supervisor thread panicked: index out of bounds; the pool runs no \
         more tasks, so make a new one (and please report this bug in mpcore)"
    );
    assert!(!e.is_panic(), "no child process panicked");
}

#[test]
fn too_many_messages_in_flight_says_what_to_do() {
    // Since the queue keeps its messages in shared memory, no public
    // call piles up enough descriptors in flight to provoke this.
    let text = Error::TooManyInFlight.to_string();
    assert!(text.contains("ETOOMANYREFS"), "{text}");
    assert!(text.contains("raise the limit (ulimit -n)"), "{text}");
}

#[test]
fn a_lost_task_is_not_called_a_closed_pool() {
    assert_eq!(
        Error::TaskLost.to_string(),
        "the pool ended without an answer for this task, so it may or may not have run: \
         submit it again to a new pool"
    );
}

#[test]
fn an_error_without_an_errno_keeps_its_own_words() {
    let e = Error::io("read", std::io::ErrorKind::UnexpectedEof.into());
    assert_eq!(e.to_string(), "read failed: unexpected end of file");
    assert_eq!(format!("{e:?}"), e.to_string());
    let e = Error::io("read", std::io::Error::from_raw_os_error(libc::EBADF));
    assert!(matches!(
        e,
        Error::Os {
            call: "read",
            errno
        } if errno.raw() == libc::EBADF

    ));
}
