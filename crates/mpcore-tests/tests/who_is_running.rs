//! Who is running: `current_process()` and `parent_process()` in the main
//! process and in children of every start method, `Process::interrupt`
//! and `send_signal`, the sentinel (`AsFd`) under `poll`, and
//! `join_async` of single children. (`active_children` has its own file,
//! whose tests must not see other tests' children; the 1,000 awaited
//! children too, which count threads.)

use std::os::fd::AsFd;
use std::time::Duration;

use mpcore::process::Builder;
use mpcore::{
    Error, Process, Signal, StartMethod, current_process, get_all_start_methods, parent_process,
};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use testkit::within;

#[macro_use]
mod methods;

const LIMIT: Duration = Duration::from_secs(30);

/// What a child says of itself and of its parent: its name, pid, daemon
/// flag and start method; its parent's pid, name and liveness.
type Seen = (
    String,
    i32,
    bool,
    Option<String>,
    Option<(i32, String, bool)>,
);

fn who(_: ()) -> Seen {
    let me = current_process();
    let parent = parent_process().map(|p| (p.pid(), p.name().to_owned(), p.is_alive()));
    (
        me.name().to_owned(),
        me.pid(),
        me.is_daemon(),
        me.start_method().map(|m| m.to_string()),
        parent,
    )
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn square(x: u64) -> u64 {
    x * x
}

fn explode(_: ()) -> u64 {
    panic!("no value today")
}

#[test]
fn the_main_process_is_main_process_and_has_no_parent() {
    let me = current_process();
    assert_eq!(me.name(), "MainProcess");
    assert_eq!(me.pid(), std::process::id() as i32);
    assert!(!me.is_daemon());
    assert_eq!(me.start_method(), None);
    assert!(parent_process().is_none());
}

#[test]
fn every_start_method_is_listed_default_first() {
    assert_eq!(
        get_all_start_methods(),
        [
            StartMethod::Fork,
            StartMethod::Spawn,
            StartMethod::ForkServer
        ]
    );
}

under_every_method! {
    /// A child knows the name its parent gave it, its pid, its daemon
    /// flag and how it was started; its parent is this process, alive.
    fn a_child_knows_who_it_is_and_who_its_parent_is(method) {
        within(LIMIT, move || {
            let mut child = Builder::new()
                .start_method(method)
                .name("worker-7")
                .daemon(true)
                .spawn_fn(who, ())
                .unwrap();
            let seen = child.join().unwrap();
            let me = std::process::id() as i32;
            assert_eq!(
                seen,
                (
                    "worker-7".to_owned(),
                    child.pid(),
                    true,
                    Some(method.to_string()),
                    Some((me, "MainProcess".to_owned(), true)),
                )
            );
        });
    }

    /// Without a name, the child is called what its handle says,
    /// `Process-N`, on both sides.
    fn a_child_without_a_name_is_process_n_on_both_sides(method) {
        within(LIMIT, move || {
            let mut child = Builder::new().start_method(method).spawn_fn(who, ()).unwrap();
            let (name, pid, daemon, ..) = child.join().unwrap();
            assert_eq!(name, child.name());
            assert!(name.starts_with("Process-"), "{name}");
            assert_eq!((pid, daemon), (child.pid(), false));
        });
    }

    /// `interrupt` is SIGINT: a child that does not handle it dies of it.
    fn interrupt_ends_a_child_with_sigint(method) {
        within(LIMIT, move || {
            let mut child = Builder::new().start_method(method).spawn_fn(sleep_ms, 20_000).unwrap();
            child.interrupt().unwrap();
            match child.join() {
                Err(Error::Signaled { pid, signal }) => {
                    assert_eq!((pid, signal), (child.pid(), Signal::SIGINT));
                }
                other => panic!("expected death by SIGINT, got {other:?}"),
            }
            assert_eq!(child.exitcode(), Some(-2));
        });
    }

    /// `send_signal` sends any signal, a real-time one too.
    fn send_signal_sends_the_signal_asked_for(method) {
        within(LIMIT, move || {
            for signal in [Signal::SIGUSR1, Signal::from_number(libc::SIGRTMIN() + 1)] {
                let mut child =
                    Builder::new().start_method(method).spawn_fn(sleep_ms, 20_000).unwrap();
                child.send_signal(signal).unwrap();
                let ended = child.join();
                assert_eq!(ended.as_ref().err().and_then(Error::signal), Some(signal), "{ended:?}");
                assert_eq!(child.exitcode(), Some(-signal.number()));
                // Once it has ended, signals go nowhere, and are no error.
                child.send_signal(Signal::SIGKILL).unwrap();
                child.interrupt().unwrap();
            }
        });
    }

    /// The sentinel is not readable while the child runs, becomes
    /// readable when it ends, and stays so after the join.
    fn the_sentinel_is_readable_once_the_child_has_ended(method) {
        within(LIMIT, move || {
            let mut child = Builder::new().start_method(method).spawn_fn(sleep_ms, 300).unwrap();
            let mut fds = [PollFd::new(child.sentinel(), PollFlags::POLLIN)];
            assert_eq!(poll(&mut fds, PollTimeout::ZERO).unwrap(), 0);
            let mut fds = [PollFd::new(child.as_fd(), PollFlags::POLLIN)];
            assert_eq!(poll(&mut fds, PollTimeout::from(20_000u16)).unwrap(), 1);
            assert_eq!(child.join().unwrap(), 300);
            let mut fds = [PollFd::new(child.sentinel(), PollFlags::POLLIN)];
            assert_eq!(poll(&mut fds, PollTimeout::ZERO).unwrap(), 1);
        });
    }

    /// `join_async` returns what `join` returns: the value, the child's
    /// panic, and `AlreadyJoined` the second time.
    fn join_async_returns_what_join_returns(method) {
        within(LIMIT, move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
            rt.block_on(async move {
                let mut child = Builder::new().start_method(method).spawn_fn(square, 12).unwrap();
                assert_eq!(child.join_async().await.unwrap(), 144);
                assert!(matches!(child.join_async().await, Err(Error::AlreadyJoined { .. })));
                let mut child = Builder::new().start_method(method).spawn_fn(explode, ()).unwrap();
                match child.join_async().await {
                    Err(Error::Panicked { message, .. }) => assert_eq!(message, "no value today"),
                    other => panic!("expected the child's panic, got {other:?}"),
                }
            });
        });
    }
}

/// `join_async`'s future is `Send`: it may run in a `tokio::spawn`ed
/// task on a multi-threaded runtime.
#[test]
fn join_async_runs_in_a_spawned_task_on_a_multi_threaded_runtime() {
    within(LIMIT, || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_io()
            .build()
            .unwrap();
        let mut child = Process::spawn(|| square(9)).unwrap();
        let task = rt.spawn(async move { child.join_async().await });
        assert_eq!(rt.block_on(task).unwrap().unwrap(), 81);
    });
}

/// A number that is no signal is refused, and the child runs on.
#[test]
fn send_signal_refuses_a_number_that_is_no_signal() {
    within(LIMIT, || {
        let mut child = Process::spawn(|| sleep_ms(100)).unwrap();
        for number in [0, -1, libc::SIGRTMAX() + 1] {
            match child.send_signal(Signal::from_number(number)) {
                Err(Error::InvalidArgument(why)) => assert!(why.contains("no signal"), "{why}"),
                other => panic!("signal number {number}: expected InvalidArgument, got {other:?}"),
            }
        }
        assert_eq!(child.join().unwrap(), 100);
    });
}

/// A grandchild's parent is the child, by its name; the child's own
/// parent is still the main process.
#[test]
fn a_grandchild_names_its_parent() {
    within(LIMIT, || {
        let mut child = Builder::new()
            .name("middle")
            .spawn(|| {
                let mut grandchild = Builder::new().name("inner").spawn(|| who(())).unwrap();
                (grandchild.join().unwrap(), grandchild.pid(), who(()))
            })
            .unwrap();
        let (inner, inner_pid, middle) = child.join().unwrap();
        let me = std::process::id() as i32;
        assert_eq!(
            inner,
            (
                "inner".to_owned(),
                inner_pid,
                false,
                Some("fork".to_owned()),
                Some((child.pid(), "middle".to_owned(), true)),
            )
        );
        assert_eq!(middle.4, Some((me, "MainProcess".to_owned(), true)));
    });
}

/// A `join_async` future dropped before the child ends leaves the child
/// running and joinable; awaiting it again finishes the join.
#[test]
fn a_dropped_join_async_future_leaves_the_child_joinable() {
    within(LIMIT, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let mut child = Process::spawn(|| sleep_ms(300)).unwrap();
        rt.block_on(async {
            let mut early = std::pin::pin!(child.join_async());
            let once = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(early.as_mut().poll(cx).is_pending())
            });
            assert!(once.await, "the child cannot have ended yet");
        });
        assert!(child.is_alive());
        assert_eq!(rt.block_on(child.join_async()).unwrap(), 300);
    });
}

/// In a copy of the handle (a fork of the parent), `interrupt` and
/// `send_signal` are refused like `kill`.
#[test]
fn signals_from_a_copy_of_the_handle_are_refused() {
    within(LIMIT, || {
        let child = std::sync::Arc::new(Process::spawn(|| sleep_ms(2_000)).unwrap());
        let mut probe = Process::spawn({
            let copy = std::sync::Arc::clone(&child);
            move || {
                (
                    matches!(copy.interrupt(), Err(Error::NotOwner { .. })),
                    matches!(
                        copy.send_signal(Signal::SIGUSR1),
                        Err(Error::NotOwner { .. })
                    ),
                )
            }
        })
        .unwrap();
        assert_eq!(probe.join().unwrap(), (true, true));
        let mut child = std::sync::Arc::into_inner(child).expect("the parent's copy is the last");
        assert!(child.is_alive());
        child.kill().unwrap();
        assert_eq!(child.join().unwrap_err().signal(), Some(Signal::SIGKILL));
    });
}

/// `connection::wait` over processes (Python's `wait([p.sentinel, ...])`):
/// exactly the children that have ended are ready, under every method,
/// and a child still running is not, until it ends too.
#[test]
fn wait_over_processes_returns_exactly_the_ended_ones() {
    within(LIMIT, || {
        for method in [
            StartMethod::Fork,
            StartMethod::Spawn,
            StartMethod::ForkServer,
        ] {
            let start = |ms| {
                Builder::new()
                    .start_method(method)
                    .spawn_fn(sleep_ms, ms)
                    .unwrap()
            };
            let mut children = [start(0), start(60_000), start(0)];
            // The quick ones end soon: wait until both are ready.
            let mut ready = Vec::new();
            while ready.len() < 2 {
                ready = mpcore::connection::wait(&children, Some(Duration::from_secs(10))).unwrap();
            }
            assert_eq!(
                ready,
                [0, 2],
                "{method:?}: the two that ended, not the sleeper"
            );
            assert_eq!(children[0].join().unwrap(), 0);
            assert_eq!(children[2].join().unwrap(), 0);
            children[1].kill().unwrap();
            let ready = mpcore::connection::wait(&children[1..2], Some(LIMIT)).unwrap();
            assert_eq!(ready, [0], "{method:?}: the killed one is ready too");
            assert!(
                children[1].join().is_err(),
                "{method:?}: a killed child has no value"
            );
        }
    });
}
