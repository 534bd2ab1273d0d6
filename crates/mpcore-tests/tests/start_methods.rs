//! Children started by a fresh program rather than a fork:
//! `StartMethod::Spawn`, a fresh `exec` of this test binary that runs the
//! task (never the test suite: mpcore's constructor takes over before
//! libtest's `main`), and `StartMethod::ForkServer`, one server process, a
//! fresh `exec` of this test binary started on first use, that forks every
//! child; the child runs its task as a spawned child does, and the server
//! reports how it ended. Handles travel to either as descriptors.
//!
//! Each scenario below is written once and runs under both methods
//! (`scenario::spawn` and `scenario::forkserver`, see `methods/mod.rs`);
//! what only one of them does is in `mod spawn_only` here and in
//! `tests/forkserver.rs`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mpcore::process::Builder;
use mpcore::{Array, Error, Event, Lock, Process, Queue, Signal, StartMethod, Value};
use serde::{Deserialize, Serialize};
use testkit::{wait_until_ended, within};

#[macro_use]
mod methods;

const LIMIT: Duration = Duration::from_secs(30);

/// A child started by `method`.
fn by(method: StartMethod) -> Builder {
    Builder::new().start_method(method)
}

fn spawning() -> Builder {
    by(StartMethod::Spawn)
}

fn square(x: u64) -> u64 {
    x * x
}

fn explode(message: String) -> u8 {
    panic!("{message}")
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// The seed's Queue job: `res += i + i**2 + i**3` over `0..1000`.
fn queue_job(q: Queue<u64>) {
    let res: u64 = (0..1000u64).map(|i| i + i.pow(2) + i.pow(3)).sum();
    q.put(res).unwrap();
}

/// Says it is up, then waits for the other one: only two children that
/// run at the same time both return `true`.
fn meet((mine, theirs): (Event, Event)) -> bool {
    mine.set();
    theirs.wait_timeout(Duration::from_secs(10)).is_ok()
}

fn add_under_the_lock((v, times): (Value<u64>, u64)) {
    for _ in 0..times {
        *v.lock().unwrap() += 1;
    }
}

fn fill((a, value): (Array<i32>, i32)) -> usize {
    for i in 0..a.len() {
        a.set(i, value + i as i32).unwrap();
    }
    a.len()
}

/// Whether the lock could be taken within 100 ms.
fn try_the_lock(lock: Lock) -> bool {
    lock.acquire_timeout(Duration::from_millis(100)).is_ok()
}

/// The consumer: waits for `ready`, takes the item, says `done`.
fn consume((ready, done, q): (Event, Event, Queue<String>)) -> String {
    ready
        .wait_timeout(Duration::from_secs(10))
        .expect("never ready");
    let item = q.get().unwrap();
    done.set();
    item
}

static HELD: Mutex<()> = Mutex::new(());

/// Takes `HELD` and reports how many threads this process has.
fn take_the_mutex(_: ()) -> usize {
    let _held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn exit_code_of_the_task(code: i32) {
    std::process::exit(code)
}

/// Set in the parent before it starts a child: a forked child sees it, a
/// spawned one or a child of the fork server (a fresh program, or its
/// fork) does not.
static MARK: AtomicU32 = AtomicU32::new(0);

/// Decodes only where `MARK` is set: in the parent or a forked child.
struct NeedsTheMark;

impl Serialize for NeedsTheMark {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

impl<'de> Deserialize<'de> for NeedsTheMark {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d)?;
        if MARK.load(Ordering::SeqCst) == 0 {
            return Err(serde::de::Error::custom("the mark is not set here"));
        }
        Ok(NeedsTheMark)
    }
}

fn needs_the_mark(_: NeedsTheMark) -> u32 {
    MARK.load(Ordering::SeqCst)
}

/// Sums the bytes on two threads of its own.
fn sum_on_threads(bytes: Vec<u8>) -> (u64, usize) {
    let (left, right) = bytes.split_at(bytes.len() / 2);
    let (left, right) = (left.to_vec(), right.to_vec());
    let other = std::thread::spawn(move || right.iter().map(|&b| u64::from(b)).sum::<u64>());
    let mine: u64 = left.iter().map(|&b| u64::from(b)).sum();
    (mine + other.join().unwrap(), bytes.len())
}

fn count_events(events: Vec<Event>) -> usize {
    events.len()
}

under_spawn_and_forkserver! {
    fn a_child_returns_its_result(method) {
        within(LIMIT, move || {
            let mut p = by(method).name("squarer").spawn_fn(square, 12).unwrap();
            assert_eq!(p.name(), "squarer");
            assert_ne!(p.pid() as u32, std::process::id());
            assert_eq!(p.join().unwrap(), 144);
            assert_eq!(p.exitcode(), Some(0));
            assert!(!p.is_alive());
        });
    }

    fn a_childs_panic_comes_back_with_its_message(method) {
        within(LIMIT, move || {
            let mut p = by(method).spawn_fn(explode, "no luck".to_owned()).unwrap();
            match p.join() {
                Err(Error::Panicked { pid, message }) => {
                    assert_eq!(pid, p.pid());
                    assert_eq!(message, "no luck");
                }
                other => panic!("expected the panic, got {other:?}"),
            }
            assert_eq!(p.exitcode(), Some(1));
        });
    }

    fn a_child_can_be_killed_and_terminated(method) {
        within(LIMIT, move || {
            let mut p = by(method).spawn_fn(sleep_ms, 60_000).unwrap();
            assert!(p.is_alive());
            assert_eq!(p.exitcode(), None);
            p.kill().unwrap();
            match p.join() {
                Err(Error::Signaled { signal, .. }) => assert_eq!(signal, Signal::SIGKILL),
                other => panic!("expected SIGKILL, got {other:?}"),
            }
            assert_eq!(p.exitcode(), Some(-9));
            assert!(!p.is_alive());
            // Once it has ended, a kill does nothing (and hits no other process).
            p.kill().unwrap();

            let mut p = by(method).spawn_fn(sleep_ms, 60_000).unwrap();
            p.terminate().unwrap();
            assert!(matches!(
                p.join(),
                Err(Error::Signaled {
                    signal: Signal::SIGTERM,
                    ..
                })
            ));
            assert_eq!(p.exitcode(), Some(-15));
        });
    }

    fn join_timeout_times_out_then_join_works(method) {
        within(LIMIT, move || {
            let mut p = by(method).spawn_fn(sleep_ms, 500).unwrap();
            match p.join_timeout(Duration::from_millis(20)) {
                Err(Error::Timeout(waited)) => assert_eq!(waited, Duration::from_millis(20)),
                other => panic!("expected a timeout, got {other:?}"),
            }
            assert!(p.is_alive());
            assert_eq!(p.join().unwrap(), 500);
            assert!(matches!(p.join(), Err(Error::AlreadyJoined { .. })));
        });
    }

    fn is_alive_turns_false_when_a_child_ends(method) {
        within(LIMIT, move || {
            let mut p = by(method).spawn_fn(sleep_ms, 50).unwrap();
            while p.is_alive() {
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(p.exitcode(), Some(0));
            assert_eq!(p.join().unwrap(), 50);
        });
    }

    fn dropping_a_daemon_child_kills_it(method) {
        within(LIMIT, move || {
            let p = by(method).daemon(true).spawn_fn(sleep_ms, 60_000).unwrap();
            let pid = p.pid();
            drop(p);
            assert!(wait_until_ended(pid, Duration::from_secs(5)));
        });
    }

    fn the_queue_job_runs_in_two_children(method) {
        within(LIMIT, move || {
            let q = Queue::new().unwrap();
            let mut p1 = by(method).spawn_fn(queue_job, q.clone()).unwrap();
            let mut p2 = by(method).spawn_fn(queue_job, q.clone()).unwrap();
            p1.join().unwrap();
            p2.join().unwrap();
            assert_eq!(q.get().unwrap() + q.get().unwrap(), 499_667_166_000);
            assert!(q.empty());
        });
    }

    fn two_children_run_at_once(method) {
        within(LIMIT, move || {
            let (a, b) = (Event::new().unwrap(), Event::new().unwrap());
            let mut first = by(method).spawn_fn(meet, (a.clone(), b.clone())).unwrap();
            let mut second = by(method).spawn_fn(meet, (b.clone(), a.clone())).unwrap();
            assert_ne!(first.pid(), second.pid());
            assert!(first.join().unwrap());
            assert!(second.join().unwrap());
        });
    }

    fn a_locked_value_counts_exactly_across_children(method) {
        within(LIMIT, move || {
            let v = Value::new(0u64).unwrap();
            let children: Vec<_> = (0..2)
                .map(|_| {
                    by(method)
                        .spawn_fn(add_under_the_lock, (v.clone(), 20_000))
                        .unwrap()
                })
                .collect();
            for mut child in children {
                child.join().unwrap();
            }
            assert_eq!(v.get().unwrap(), 40_000);
        });
    }

    fn an_array_written_by_a_child_is_seen_by_the_parent(method) {
        within(LIMIT, move || {
            let a = Array::new(&[0i32; 5]).unwrap();
            let mut p = by(method).spawn_fn(fill, (a.clone(), 10)).unwrap();
            assert_eq!(p.join().unwrap(), 5);
            assert_eq!(a.to_vec().unwrap(), [10, 11, 12, 13, 14]);
        });
    }

    fn a_lock_held_by_the_parent_is_held_in_a_child(method) {
        within(LIMIT, move || {
            let lock = Lock::new().unwrap();
            let guard = lock.acquire().unwrap();
            let mut blocked = by(method).spawn_fn(try_the_lock, lock.clone()).unwrap();
            assert!(
                !blocked.join().unwrap(),
                "the child took a lock the parent held"
            );
            drop(guard);
            let mut free = by(method).spawn_fn(try_the_lock, lock.clone()).unwrap();
            assert!(free.join().unwrap());
            // The child released it on its way out.
            assert!(lock.acquire_timeout(Duration::ZERO).is_ok());
        });
    }

    fn events_pass_between_a_parent_and_a_child(method) {
        within(LIMIT, move || {
            let (ready, done) = (Event::new().unwrap(), Event::new().unwrap());
            let q = Queue::new().unwrap();
            let mut consumer = by(method)
                .spawn_fn(consume, (ready.clone(), done.clone(), q.clone()))
                .unwrap();
            q.put("produced".to_owned()).unwrap();
            assert!(!done.is_set());
            ready.set();
            done.wait_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(consumer.join().unwrap(), "produced");
        });
    }

    /// A fork copies a mutex that another thread holds locked; a fresh
    /// program (a spawned child, or the fork server and so its children)
    /// has its own, free mutex, and one thread.
    fn a_mutex_held_by_a_parents_thread_hangs_a_fork_but_not_this_child(method) {
        within(LIMIT, move || {
            let (taken, take) = std::sync::mpsc::channel();
            let (release, released) = std::sync::mpsc::channel::<()>();
            let holder = std::thread::spawn(move || {
                let _held = HELD.lock().unwrap();
                taken.send(()).unwrap();
                let _ = released.recv();
            });
            take.recv().unwrap();

            // A fork copies the mutex locked, and no thread of the child will
            // ever unlock it.
            let mut forked = Builder::new()
                .start_method(StartMethod::Fork)
                .daemon(true)
                .spawn_fn(take_the_mutex, ())
                .unwrap();
            assert!(matches!(
                forked.join_timeout(Duration::from_millis(500)),
                Err(Error::Timeout(_))
            ));
            forked.kill().unwrap();

            let mut child = by(method).spawn_fn(take_the_mutex, ()).unwrap();
            assert_eq!(child.join_timeout(Duration::from_secs(10)).unwrap(), 1);

            release.send(()).unwrap();
            holder.join().unwrap();
        });
    }

    fn a_child_that_exits_reports_its_code(method) {
        within(LIMIT, move || {
            let mut p = by(method).spawn_fn(exit_code_of_the_task, 3).unwrap();
            assert!(matches!(p.join(), Err(Error::Exited { code: 3, .. })));
            assert_eq!(p.exitcode(), Some(3));
        });
    }

    fn a_child_that_cannot_read_its_argument_says_so(method) {
        within(LIMIT, move || {
            MARK.store(7, Ordering::SeqCst);
            let mut forked = Builder::new()
                .start_method(StartMethod::Fork)
                .spawn_fn(needs_the_mark, NeedsTheMark)
                .unwrap();
            assert_eq!(forked.join().unwrap(), 7);
            let mut p = by(method).spawn_fn(needs_the_mark, NeedsTheMark).unwrap();
            match p.join() {
                Err(e @ Error::StartFailed { .. }) => assert_eq!(
                    e.to_string(),
                    format!(
                        "spawned child process {} could not start its task: could not read its \
                         argument: could not decode a message: Serde Deserialization Error",
                        p.pid()
                    )
                ),
                other => panic!("expected StartFailed, got {other:?}"),
            }
            assert_eq!(p.exitcode(), Some(1));
        });
    }

    fn a_closure_is_refused_with_advice(method) {
        let e = by(method).spawn(|| 1).unwrap_err();
        assert!(matches!(e, Error::ClosureNeedsFork { method: m } if m == method));
        assert_eq!(
            e.to_string(),
            format!(
                "a closure can start a child only by fork, not by {method}: a {method} child is \
                 a fresh run of the program, which cannot receive what a closure captures; pass \
                 a plain fn and its argument to process::Builder::spawn_fn instead"
            )
        );
    }

    fn a_task_may_start_threads_and_take_a_large_argument(method) {
        within(LIMIT, move || {
            // 4 MiB: far more than a packet holds, so it travels in a memfd.
            let bytes: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
            let expected: u64 = bytes.iter().map(|&b| u64::from(b)).sum();
            let mut p = by(method).spawn_fn(sum_on_threads, bytes).unwrap();
            assert_eq!(p.join().unwrap(), (expected, 4 << 20));
        });
    }

    /// One message carries at most 253 descriptors.
    fn an_argument_holds_up_to_253_handles(method) {
        within(LIMIT, move || {
            let events: Vec<Event> = (0..254).map(|_| Event::new().unwrap()).collect();
            let e = by(method)
                .spawn_fn(count_events, events.clone())
                .unwrap_err();
            assert!(
                e.to_string().starts_with(
                    "invalid argument: a spawned process's argument may hold at most 253 handles"
                ),
                "{e}"
            );
            let mut p = by(method)
                .spawn_fn(count_events, events[..253].to_vec())
                .unwrap();
            assert_eq!(p.join().unwrap(), 253);
        });
    }
}

/// What only `StartMethod::Spawn` does (the fork server's own are in
/// `tests/forkserver.rs`).
mod spawn_only {
    use super::*;

    #[test]
    fn a_handle_outside_a_spawn_argument_does_not_serialize() {
        let q: Queue<Value<u8>> = Queue::new().unwrap();
        let e = q.put(Value::new(1u8).unwrap()).unwrap_err();
        assert!(matches!(e, Error::Codec { .. }), "{e:?}");
        assert!(
            e.to_string().contains(
                "a Value can be sent only in the argument of a spawned process \
                 (process::Builder::spawn_fn under StartMethod::Spawn)"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_spawned_child_dies_with_its_parent() {
        let (ended, child_pid) = testkit::child_dies_with_killed_parent(
            env!("CARGO_BIN_EXE_mpcore-test-helper"),
            &["orphan", "spawn"],
        );
        assert!(
            ended,
            "the spawned child {child_pid} outlived its killed parent: an orphan"
        );
    }

    #[test]
    fn spawn_fn_under_the_default_forks() {
        // This binary never sets a default: `Process::spawn_fn` forks, and the
        // child sees what the parent had in memory.
        within(LIMIT, || {
            MARK.store(7, Ordering::SeqCst);
            let mut p = Process::spawn_fn(needs_the_mark, NeedsTheMark).unwrap();
            assert_eq!(p.join().unwrap(), 7);
        });
    }

    /// Spawns a grandchild that squares `x`; also says whether the variable
    /// that marks a spawned child is still in this child's environment.
    fn spawn_a_grandchild(x: u64) -> (u64, bool) {
        let marked = std::env::vars_os().any(|(name, _)| name == "MPCORE_SPAWNED_CHILD");
        let mut grandchild = spawning().spawn_fn(square, x).unwrap();
        (grandchild.join().unwrap(), marked)
    }

    #[test]
    fn a_spawned_child_can_spawn_in_turn_and_leaves_no_mark_in_its_environment() {
        within(LIMIT, || {
            let mut p = spawning().spawn_fn(spawn_a_grandchild, 9).unwrap();
            assert_eq!(p.join().unwrap(), (81, false));
        });
    }

    fn print_a_line(line: String) -> usize {
        println!("{line}");
        line.len()
    }

    #[test]
    fn the_stdout_lock_held_by_a_parents_thread_stops_a_fork_but_not_a_spawn() {
        within(LIMIT, || {
            let (taken, take) = std::sync::mpsc::channel();
            let (release, released) = std::sync::mpsc::channel::<()>();
            let holder = std::thread::spawn(move || {
                let _held = std::io::stdout().lock();
                taken.send(()).unwrap();
                let _ = released.recv();
            });
            take.recv().unwrap();

            // A fork must not copy the lock held: it gives up, with an error.
            let forked = Builder::new()
                .start_method(StartMethod::Fork)
                .spawn_fn(print_a_line, "forked".to_owned());
            assert!(
                matches!(forked, Err(Error::StreamLocked { .. })),
                "{forked:?}"
            );
            // A spawned child has a stdout lock of its own.
            let mut spawned = spawning()
                .spawn_fn(print_a_line, "spawned".to_owned())
                .unwrap();
            assert_eq!(spawned.join_timeout(Duration::from_secs(10)).unwrap(), 7);

            release.send(()).unwrap();
            holder.join().unwrap();
        });
    }
}
