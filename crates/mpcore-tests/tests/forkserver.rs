//! `StartMethod::ForkServer`: one server process, a fresh `exec` of this
//! test binary started on first use, forks every child; the child runs its
//! task as a spawned child does, and the server reports how it ended.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mpcore::process::Builder;
use mpcore::{Array, Error, Event, Lock, Queue, Signal, StartMethod, Value};
use serde::{Deserialize, Serialize};
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

#[test]
fn a_fork_server_child_returns_its_result() {
    within(LIMIT, || {
        let mut p = by_server().name("squarer").spawn_fn(square, 12).unwrap();
        assert_eq!(p.name(), "squarer");
        assert_ne!(p.pid() as u32, std::process::id());
        assert_eq!(p.join().unwrap(), 144);
        assert_eq!(p.exitcode(), Some(0));
        assert!(!p.is_alive());
    });
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

fn explode(message: String) -> u8 {
    panic!("{message}")
}

#[test]
fn a_fork_server_childs_panic_comes_back_with_its_message() {
    within(LIMIT, || {
        let mut p = by_server().spawn_fn(explode, "no luck".to_owned()).unwrap();
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

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn a_fork_server_child_can_be_killed_and_terminated() {
    within(LIMIT, || {
        let mut p = by_server().spawn_fn(sleep_ms, 60_000).unwrap();
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

        let mut p = by_server().spawn_fn(sleep_ms, 60_000).unwrap();
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

#[test]
fn join_timeout_on_a_fork_server_child_times_out_then_join_works() {
    within(LIMIT, || {
        let mut p = by_server().spawn_fn(sleep_ms, 500).unwrap();
        match p.join_timeout(Duration::from_millis(20)) {
            Err(Error::Timeout(waited)) => assert_eq!(waited, Duration::from_millis(20)),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(p.is_alive());
        assert_eq!(p.join().unwrap(), 500);
        assert!(matches!(p.join(), Err(Error::AlreadyJoined { .. })));
    });
}

#[test]
fn is_alive_turns_false_when_a_fork_server_child_ends() {
    within(LIMIT, || {
        let mut p = by_server().spawn_fn(sleep_ms, 50).unwrap();
        while p.is_alive() {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(p.join().unwrap(), 50);
    });
}

#[test]
fn dropping_a_daemon_fork_server_child_kills_it() {
    within(LIMIT, || {
        let p = by_server().daemon(true).spawn_fn(sleep_ms, 60_000).unwrap();
        let pid = p.pid();
        drop(p);
        assert!(wait_until_ended(pid, Duration::from_secs(5)));
    });
}

/// The seed's Queue job: `res += i + i**2 + i**3` over `0..1000`.
fn queue_job(q: Queue<u64>) {
    let res: u64 = (0..1000u64).map(|i| i + i.pow(2) + i.pow(3)).sum();
    q.put(res).unwrap();
}

#[test]
fn the_queue_job_runs_in_two_fork_server_children() {
    within(LIMIT, || {
        let q = Queue::new().unwrap();
        let mut p1 = by_server().spawn_fn(queue_job, q.clone()).unwrap();
        let mut p2 = by_server().spawn_fn(queue_job, q.clone()).unwrap();
        p1.join().unwrap();
        p2.join().unwrap();
        assert_eq!(q.get().unwrap() + q.get().unwrap(), 499_667_166_000);
        assert!(q.empty());
    });
}

/// Says it is up, then waits for the other one: only two children that
/// run at the same time both return `true`.
fn meet((mine, theirs): (Event, Event)) -> bool {
    mine.set();
    theirs.wait_timeout(Duration::from_secs(10)).is_ok()
}

#[test]
fn two_fork_server_children_run_at_once() {
    within(LIMIT, || {
        let (a, b) = (Event::new().unwrap(), Event::new().unwrap());
        let mut first = by_server().spawn_fn(meet, (a.clone(), b.clone())).unwrap();
        let mut second = by_server().spawn_fn(meet, (b.clone(), a.clone())).unwrap();
        assert_ne!(first.pid(), second.pid());
        assert!(first.join().unwrap());
        assert!(second.join().unwrap());
    });
}

fn add_under_the_lock((v, times): (Value<u64>, u64)) {
    for _ in 0..times {
        *v.lock().unwrap() += 1;
    }
}

#[test]
fn a_locked_value_counts_exactly_across_fork_server_children() {
    within(LIMIT, || {
        let v = Value::new(0u64).unwrap();
        let children: Vec<_> = (0..2)
            .map(|_| {
                by_server()
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

fn fill((a, value): (Array<i32>, i32)) -> usize {
    for i in 0..a.len() {
        a.set(i, value + i as i32).unwrap();
    }
    a.len()
}

#[test]
fn an_array_written_by_a_fork_server_child_is_seen_by_the_parent() {
    within(LIMIT, || {
        let a = Array::new(&[0i32; 5]).unwrap();
        let mut p = by_server().spawn_fn(fill, (a.clone(), 10)).unwrap();
        assert_eq!(p.join().unwrap(), 5);
        assert_eq!(a.to_vec().unwrap(), [10, 11, 12, 13, 14]);
    });
}

/// Whether the lock could be taken within 100 ms.
fn try_the_lock(lock: Lock) -> bool {
    lock.acquire_timeout(Duration::from_millis(100)).is_ok()
}

#[test]
fn a_lock_held_by_the_parent_is_held_in_a_fork_server_child() {
    within(LIMIT, || {
        let lock = Lock::new().unwrap();
        let guard = lock.acquire().unwrap();
        let mut blocked = by_server().spawn_fn(try_the_lock, lock.clone()).unwrap();
        assert!(
            !blocked.join().unwrap(),
            "the child took a lock the parent held"
        );
        drop(guard);
        let mut free = by_server().spawn_fn(try_the_lock, lock.clone()).unwrap();
        assert!(free.join().unwrap());
        // The child released it on its way out.
        assert!(lock.acquire_timeout(Duration::ZERO).is_ok());
    });
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

#[test]
fn events_pass_between_a_parent_and_a_fork_server_child() {
    within(LIMIT, || {
        let (ready, done) = (Event::new().unwrap(), Event::new().unwrap());
        let q = Queue::new().unwrap();
        let mut consumer = by_server()
            .spawn_fn(consume, (ready.clone(), done.clone(), q.clone()))
            .unwrap();
        q.put("produced".to_owned()).unwrap();
        assert!(!done.is_set());
        ready.set();
        done.wait_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(consumer.join().unwrap(), "produced");
    });
}

static HELD: Mutex<()> = Mutex::new(());

/// Takes `HELD` and reports how many threads this process has.
fn take_the_mutex(_: ()) -> usize {
    let _held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn a_mutex_held_by_a_parents_thread_does_not_hang_a_fork_server_child() {
    within(LIMIT, || {
        let (taken, take) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let _held = HELD.lock().unwrap();
            taken.send(()).unwrap();
            let _ = released.recv();
        });
        take.recv().unwrap();

        // The server is a fresh program with one thread: its children have
        // their own, free mutex.
        let mut child = by_server().spawn_fn(take_the_mutex, ()).unwrap();
        assert_eq!(child.join_timeout(Duration::from_secs(10)).unwrap(), 1);

        release.send(()).unwrap();
        holder.join().unwrap();
    });
}

fn exit_code_of_the_task(code: i32) {
    std::process::exit(code)
}

#[test]
fn a_fork_server_child_that_exits_reports_its_code() {
    within(LIMIT, || {
        let mut p = by_server().spawn_fn(exit_code_of_the_task, 3).unwrap();
        assert!(matches!(p.join(), Err(Error::Exited { code: 3, .. })));
        assert_eq!(p.exitcode(), Some(3));
    });
}

/// Set in the parent before it starts a child: a forked child sees it, a
/// child of the fork server (a fresh program's fork) does not.
static MARK: AtomicU32 = AtomicU32::new(0);

/// Decodes only where `MARK` is set.
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

#[test]
fn a_fork_server_child_that_cannot_read_its_argument_says_so() {
    within(LIMIT, || {
        MARK.store(7, Ordering::SeqCst);
        let mut p = by_server().spawn_fn(needs_the_mark, NeedsTheMark).unwrap();
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

#[test]
fn a_closure_is_refused_under_forkserver() {
    let e = by_server().spawn(|| 1).unwrap_err();
    assert!(matches!(
        e,
        Error::ClosureNeedsFork {
            method: StartMethod::ForkServer
        }
    ));
}

/// Sums the bytes on two threads of its own.
fn sum_on_threads(bytes: Vec<u8>) -> (u64, usize) {
    let (left, right) = bytes.split_at(bytes.len() / 2);
    let (left, right) = (left.to_vec(), right.to_vec());
    let other = std::thread::spawn(move || right.iter().map(|&b| u64::from(b)).sum::<u64>());
    let mine: u64 = left.iter().map(|&b| u64::from(b)).sum();
    (mine + other.join().unwrap(), bytes.len())
}

#[test]
fn a_fork_server_task_may_start_threads_and_take_a_large_argument() {
    within(LIMIT, || {
        // 4 MiB: far more than a packet holds, so it travels in a memfd.
        let bytes: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
        let expected: u64 = bytes.iter().map(|&b| u64::from(b)).sum();
        let mut p = by_server().spawn_fn(sum_on_threads, bytes).unwrap();
        assert_eq!(p.join().unwrap(), (expected, 4 << 20));
    });
}

fn count_events(events: Vec<Event>) -> usize {
    events.len()
}

#[test]
fn a_fork_server_argument_holds_up_to_253_handles() {
    within(LIMIT, || {
        let events: Vec<Event> = (0..254).map(|_| Event::new().unwrap()).collect();
        let e = by_server()
            .spawn_fn(count_events, events.clone())
            .unwrap_err();
        assert!(
            e.to_string().starts_with(
                "invalid argument: a spawned process's argument may hold at most 253 handles"
            ),
            "{e}"
        );
        let mut p = by_server()
            .spawn_fn(count_events, events[..253].to_vec())
            .unwrap();
        assert_eq!(p.join().unwrap(), 253);
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
