//! Scenarios that need a process of their own, run by mpcore's integration
//! tests (`tests/*.rs`) with a deadline: they start this binary with
//! `testkit::run` and `env!("CARGO_BIN_EXE_mpcore-test-helper")`.
//!
//! - `orphan [fork|spawn|forkserver]`: starts a child that sleeps (forked,
//!   spawned with `StartMethod::Spawn`, or forked by the fork server),
//!   prints `child-pid N`, then sleeps itself until the test kills it with
//!   SIGKILL.
//! - `forkserver-killed`: starts a fork-server child that reports its
//!   parent (the server) and one that sleeps, kills the server with
//!   SIGKILL, and prints what joining the sleeper says; then starts another
//!   child and prints whether a new server started it, its result, and
//!   whether the dead server was reaped.
//! - `forkserver-sigchld-ignored`: with `SIGCHLD` set to `SIG_IGN`, starts
//!   fork-server children that exit with code 3, return 5 and are killed,
//!   and prints what `join` and `exitcode` say of each.
//! - `pool-orphan [fork|spawn|forkserver]`: the same with a pool of one
//!   worker (started by that method): prints the worker's pid as
//!   `child-pid N`.
//! - `shm normal|panic|killed`: makes one of each shared object (`Value`,
//!   `Array`, `Lock`, `Event`), uses them from a child, checks that none is
//!   under `/dev/shm`, then ends normally, panics, or (for `killed`) holds
//!   the locks, starts a child waiting on an event, prints `ready PID` and
//!   sleeps until the test kills it.
//! - `print-storm N`: one thread prints in a tight loop while the main
//!   thread spawns and joins N processes that print; prints `joined N`.
//! - `buffered`: with this one thread only, prints half a line, spawns a
//!   child that prints without a newline, joins it, ends the line: the
//!   output must hold each piece once, in order.
//! - `stdout-held`: holds `stdout().lock()` while it makes a pool, spawns
//!   from a second thread, and iterates `imap` on a pool that must replace
//!   its workers; each must end (in an error), not hang. Then it lets go
//!   and checks that all works again.
//! - `unwind serialize|drop-result|drop-payload`: starts a daemon sibling
//!   that sleeps, then a child whose result panics when serialized, whose
//!   result panics when dropped in the child, or whose panic payload panics
//!   when dropped; prints `result: ...` as the parent's `join` saw it and
//!   `sibling: alive` or `sibling: dead`. A child that unwound into this
//!   `main` would print too, or kill the sibling as it dropped the handle.
//! - `sigchld-ignored`: with `SIGCHLD` set to `SIG_IGN`, so that the kernel
//!   reaps children itself, checks what `join`, `is_alive`, `exitcode` and
//!   `kill` say, and prints each answer.
//! - `pool-panic [fork|spawn]`: a pool of one worker (started by that
//!   method) runs a task that panics; prints the
//!   panic message `join` returned (the worker prints its own on stderr).
//! - `no-free-fd`: fills its descriptor table, then takes a 1 MiB result
//!   from a `Process` (twice), from a `Pool` task and from a `Queue`,
//!   printing each error (the queue needs no descriptor: it prints its
//!   item's check);
//!   frees the table, takes both again, and prints whether the pool kept
//!   its workers.
//! - `fork-retry`: a pool whose one worker retires after each task, run
//!   with a full descriptor table, so that the replacement's fork fails
//!   until the table is freed 300 ms later; prints both tasks' results.
//! - `named create NAME`: creates the `SharedMemory` NAME of ten `u64`s,
//!   writes 0, 1, 4, ..., 81 in it, prints `created NAME`, then waits for
//!   a line on standard input (or end of file, or a SIGKILL) and exits.
//! - `named read NAME`: opens NAME as a program that is no child of its
//!   creator, prints `opened NAME`, waits for a line on standard input (or
//!   its end), then prints the values it finds and their sum.

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mpcore::process::Builder;
use mpcore::{Array, Event, Lock, Pool, Process, StartMethod, Value};
use serde::{Deserialize, Serialize};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("orphan") => orphan(args.get(1).map(String::as_str)),
        Some("pool-orphan") => pool_orphan(args.get(1).map(String::as_str)),
        Some("forkserver-killed") => fork_server_killed(),
        Some("forkserver-sigchld-ignored") => fork_server_sigchld_ignored(),
        Some("shm") => shared_objects(args.get(1).map(String::as_str)),
        Some("print-storm") => print_storm(args.get(1).map_or(Ok(200), |n| n.parse())?),
        Some("buffered") => buffered(),
        Some("stdout-held") => stdout_held(),
        Some("unwind") => unwind_after_fork(args.get(1).map(String::as_str)),
        Some("sigchld-ignored") => sigchld_ignored(),
        Some("pool-panic") => pool_panic(args.get(1).map(String::as_str)),
        Some("no-free-fd") => no_free_descriptor(),
        Some("fork-retry") => fork_retry(),
        Some("named") => named(
            args.get(1).map(String::as_str),
            args.get(2).ok_or("named: which name?")?,
        ),
        other => Err(format!("unknown scenario {other:?}").into()),
    }
}

fn buffered() -> Result<(), Box<dyn std::error::Error>> {
    for i in 0..3 {
        print!("parent-{i} ");
        Process::spawn(move || print!("child-{i} "))?.join()?;
    }
    println!("parent-end");
    Ok(())
}

fn sleep_for(seconds: u64) {
    thread::sleep(Duration::from_secs(seconds));
}

fn start_method(name: Option<&str>) -> Result<StartMethod, Box<dyn std::error::Error>> {
    match name {
        None | Some("fork") => Ok(StartMethod::Fork),
        Some("spawn") => Ok(StartMethod::Spawn),
        Some("forkserver") => Ok(StartMethod::ForkServer),
        Some(other) => Err(format!("unknown start method {other:?}").into()),
    }
}

fn pool_orphan(method: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let pool = mpcore::pool::Builder::new()
        .processes(1)
        .start_method(start_method(method)?)
        .build()?;
    // The worker runs tasks: it is up, not merely started.
    if pool.apply(|x: u64| x + 1, 1)? != 2 {
        return Err("the worker's task went wrong".into());
    }
    println!("child-pid {}", pool.pids()[0]);
    std::io::stdout().flush()?;
    thread::sleep(Duration::from_secs(120));
    Err("the test should have killed this process".into())
}

fn orphan(method: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let method = start_method(method)?;
    let child = Builder::new()
        .start_method(method)
        .spawn_fn(sleep_for, 120)?;
    println!("child-pid {}", child.pid());
    std::io::stdout().flush()?;
    // Sleep on the thread that forked: the child's PR_SET_PDEATHSIG is tied
    // to this thread, and the test kills the whole process meanwhile.
    thread::sleep(Duration::from_secs(120));
    Err("the test should have killed this process".into())
}

/// The pid of this process's parent: for a fork-server child, the server.
fn parent_pid(_: ()) -> u32 {
    std::os::unix::process::parent_id()
}

fn fork_server_killed() -> Result<(), Box<dyn std::error::Error>> {
    let by_server = || Builder::new().start_method(StartMethod::ForkServer);
    let server = by_server().spawn_fn(parent_pid, ())?.join()?;
    let mut sleeper = by_server().spawn_fn(sleep_for, 120)?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    match sleeper.join() {
        Ok(()) => println!("sleeper: returned"),
        Err(e) => println!(
            "sleeper: {}",
            e.to_string().replace(&sleeper.pid().to_string(), "N")
        ),
    }
    println!("sleeper alive: {}", sleeper.is_alive());
    let new_server = by_server().spawn_fn(parent_pid, ())?.join()?;
    println!("new server: {}", new_server != server);
    println!(
        "new server is ours: {}",
        std::fs::read_to_string(format!("/proc/{new_server}/stat"))?
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
            == Some(std::process::id())
    );
    println!(
        "old server reaped: {}",
        !std::path::Path::new(&format!("/proc/{server}")).exists()
    );
    Ok(())
}

fn exit_with(code: i32) -> u8 {
    std::process::exit(code)
}

fn fork_server_sigchld_ignored() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no
    // handler; nothing else in this helper handles SIGCHLD.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGCHLD,
            nix::sys::signal::SigHandler::SigIgn,
        )
    }?;
    let by_server = || Builder::new().start_method(StartMethod::ForkServer);
    // The server reaps its children itself, whatever this program does
    // with SIGCHLD: every status arrives.
    let mut exits = by_server().spawn_fn(exit_with, 3)?;
    let joined = exits
        .join()
        .map_err(|e| e.to_string().replace(&exits.pid().to_string(), "N"));
    println!("join: {joined:?} exitcode {:?}", exits.exitcode());
    let mut returns = by_server().spawn_fn(exit_with, 5)?;
    let _ = returns.join();
    println!("exitcode {:?}", returns.exitcode());
    let mut killed = by_server().spawn_fn(sleep_for, 120)?;
    killed.kill()?;
    let _ = killed.join();
    println!("killed: exitcode {:?}", killed.exitcode());
    Ok(())
}

fn shared_objects(ending: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let v = Value::new(0i32)?;
    let a = Array::new(&[1.0f64, 2.0])?;
    let lock = Lock::new()?;
    let e = Event::new()?;
    let mut child = Process::spawn({
        let (v, a, lock, e) = (v.clone(), a.clone(), lock.clone(), e.clone());
        move || {
            let _held = lock.acquire().is_ok();
            let wrote = v.set(1).is_ok() && a.set(1, 3.0).is_ok();
            e.set();
            wrote
        }
    })?;
    if !(child.join()? && e.is_set() && v.get()? == 1 && a.to_vec()? == [1.0, 3.0]) {
        return Err("the child's changes did not reach the parent".into());
    }
    // Named shared memory would show here as a mapping or an open file.
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    if let Some(line) = maps.lines().find(|l| l.contains("/dev/shm")) {
        return Err(format!("a mapping under /dev/shm: {line}").into());
    }
    match ending {
        Some("normal") => Ok(()),
        Some("panic") => panic!("panicked on purpose, holding every kind of shared object"),
        Some("killed") => {
            e.clear();
            let _held = lock.acquire()?;
            let _value_held = v.lock()?;
            // The child waits for an event nobody sets; it dies with us.
            let child = Process::spawn({
                let e = e.clone();
                move || e.wait().is_ok()
            })?;
            println!("ready {}", child.pid());
            std::io::stdout().flush()?;
            thread::sleep(Duration::from_secs(120));
            Err("the test should have killed this process".into())
        }
        other => Err(format!("unknown ending {other:?}").into()),
    }
}

fn named(role: Option<&str>, name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let shm = match role {
        Some("create") => {
            let shm = mpcore::SharedMemory::create(name, 10 * 8)?;
            for (i, slot) in shm.lock()?.view_mut::<u64>()?.iter_mut().enumerate() {
                *slot = (i * i) as u64;
            }
            println!("created {}", shm.name());
            shm
        }
        Some("read") => {
            let shm = mpcore::SharedMemory::open(name)?;
            println!("opened {}", shm.name());
            shm
        }
        other => return Err(format!("unknown role {other:?}").into()),
    };
    std::io::stdout().flush()?;
    std::io::stdin().read_line(&mut String::new())?;
    if role == Some("read") {
        let values = shm.lock()?.view::<u64>()?.to_vec();
        println!("values {values:?}");
        println!("sum {}", values.iter().sum::<u64>());
    }
    Ok(())
}

fn print_storm(n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let printer = thread::spawn(|| {
        for i in 0u64.. {
            println!("printer line {i}");
            eprintln!("printer error line {i}");
        }
    });
    for i in 0..n {
        let mut p = Process::spawn(move || {
            println!("child {i} says hello");
            eprintln!("child {i} says hello on stderr");
            i
        })?;
        let got = p.join()?;
        if got != i {
            return Err(format!("child {i} returned {got}").into());
        }
    }
    // The printer never ends; leaving with exit() takes it down.
    drop(printer);
    println!("joined {n}");
    std::io::stdout().flush()?;
    std::process::exit(0)
}

fn stdout_held() -> Result<(), Box<dyn std::error::Error>> {
    let retiring = mpcore::pool::Builder::new()
        .processes(1)
        .max_tasks_per_child(1)
        .build()?;
    let mut out = std::io::stdout().lock();
    match mpcore::Pool::new(2) {
        Err(e @ mpcore::Error::StreamLocked { .. }) => writeln!(out, "pool-new: {e}")?,
        other => writeln!(out, "pool-new: unexpected {other:?}")?,
    }
    let from_thread = thread::spawn(|| match Process::spawn(|| 1u8) {
        Err(e @ mpcore::Error::StreamLocked { .. }) => format!("{e}"),
        other => format!("unexpected {:?}", other.map(|mut p| p.join())),
    })
    .join()
    .map_err(|_| "the spawning thread panicked")?;
    writeln!(out, "spawn-from-thread: {from_thread}")?;
    let results: Vec<_> = retiring.imap(|x: u32| x * 2, 0..4)?.collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    writeln!(out, "imap: {} results, {ok} ok", results.len())?;
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        writeln!(out, "imap error: {e}")?;
    }
    drop(out);
    let pool = mpcore::Pool::new(2)?;
    println!("released: {:?}", pool.map(|x: u32| x + 1, 0..3)?);
    Ok(())
}

/// The helper's own pid, so that a value can tell whether it is being
/// dropped in the helper or in one of its children.
static HELPER_PID: AtomicU32 = AtomicU32::new(0);

/// A result whose `Serialize` panics.
#[derive(Debug, Deserialize)]
struct PanicsWhenSerialized;

impl Serialize for PanicsWhenSerialized {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("this value refuses to be serialized")
    }
}

/// A value whose `Drop` panics in any process but the helper itself.
#[derive(Debug, Serialize, Deserialize)]
struct PanicsWhenDroppedInAChild(u32);

impl Drop for PanicsWhenDroppedInAChild {
    fn drop(&mut self) {
        if std::process::id() != HELPER_PID.load(Ordering::SeqCst) {
            panic!("this value refuses to be dropped in a child");
        }
    }
}

fn unwind_after_fork(kind: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    HELPER_PID.store(std::process::id(), Ordering::SeqCst);
    let mut sibling = Builder::new()
        .daemon(true)
        .spawn(|| thread::sleep(Duration::from_secs(120)))?;
    let result = match kind {
        Some("serialize") => Process::spawn(|| PanicsWhenSerialized)?
            .join()
            .map(|_| "a value".to_owned()),
        Some("drop-result") => Process::spawn(|| PanicsWhenDroppedInAChild(7))?
            .join()
            .map(|v| format!("{v:?}")),
        Some("drop-payload") => {
            Process::spawn(|| -> u8 { std::panic::panic_any(PanicsWhenDroppedInAChild(8)) })?
                .join()
                .map(|v| v.to_string())
        }
        other => return Err(format!("unknown kind {other:?}").into()),
    };
    match result {
        Ok(value) => println!("result: {value}"),
        Err(e) => println!("result: {}", e.panic_message().unwrap_or(&e.to_string())),
    }
    let alive = sibling.is_alive();
    println!("sibling: {}", if alive { "alive" } else { "dead" });
    sibling.kill()?;
    Ok(())
}

fn sigchld_ignored() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no
    // handler; nothing else in this helper handles SIGCHLD.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGCHLD,
            nix::sys::signal::SigHandler::SigIgn,
        )
    }?;

    // The kernel reaps the child as it exits; the value is already sent.
    let mut p = Process::spawn(|| 42u32)?;
    println!("join: {:?}", p.join());

    let mut quick = Process::spawn(|| 5u8)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while quick.is_alive() {
        if Instant::now() > deadline {
            return Err("the child never ended".into());
        }
        thread::sleep(Duration::from_millis(1));
    }
    println!(
        "ended: is_alive {} exitcode {:?} exit_status {:?}",
        quick.is_alive(),
        quick.exitcode(),
        quick.exit_status()
    );
    println!(
        "kill: {:?} terminate: {:?}",
        quick.kill(),
        quick.terminate()
    );
    println!("join: {:?}", quick.join());

    let mut silent = Process::spawn(|| -> u8 { std::process::exit(0) })?;
    println!("join: {:?}", silent.join());
    Ok(())
}

fn pool_panic(method: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    fn fails(x: u32) -> u32 {
        panic!("task {x} failed on purpose")
    }
    let pool = mpcore::pool::Builder::new()
        .processes(1)
        .start_method(start_method(method)?)
        .build()?;
    let err = pool.apply(fails, 4).err().ok_or("the task did not fail")?;
    println!("{}", err.panic_message().ok_or("not a panic")?);
    Ok(())
}

/// More than a message carries inline: it travels in a memfd.
const BIG: usize = 1 << 20;

fn big(fill: u8) -> Vec<u8> {
    vec![fill; BIG]
}

fn small(x: u32) -> u32 {
    x + 1
}

/// Opens `/dev/null` until the descriptor table is full; the files free
/// their slots when dropped. The limit is lowered first, so that this
/// takes a few hundred files, not a million.
fn fill_descriptor_table() -> Result<Vec<std::fs::File>, Box<dyn std::error::Error>> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, 256.min(hard), hard)?;
    let mut files = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(file) => files.push(file),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => return Ok(files),
            Err(e) => return Err(e.into()),
        }
    }
}

fn no_free_descriptor() -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::new(2)?;
    let pids = pool.pids();
    let mut child = Process::spawn(|| big(7))?;
    let queue = mpcore::Queue::new()?;
    queue.put(big(3))?;
    let files = fill_descriptor_table()?;
    println!("process: {}", error_text(child.join()));
    println!("process again: {}", error_text(child.join()));
    println!("pool: {}", error_text(pool.apply(big, 1)));
    println!("queue: {:?}", queue.get().map(|item| item == big(3)));
    drop(files);
    println!("process after: {}", child.join()? == big(7));
    println!("pool after: {}", pool.apply(big, 2)? == big(2));
    println!("same workers: {}", pool.pids() == pids);
    Ok(())
}

fn fork_retry() -> Result<(), Box<dyn std::error::Error>> {
    let pool = mpcore::pool::Builder::new()
        .processes(1)
        .max_tasks_per_child(1)
        .build()?;
    let files = fill_descriptor_table()?;
    let first = pool.apply_async(small, 1)?;
    let second = pool.apply_async(small, 2)?;
    thread::sleep(Duration::from_millis(300));
    drop(files);
    println!("first: {:?}", first.get());
    println!("second: {:?}", second.get());
    Ok(())
}

/// The error's text, or what came instead of an error.
fn error_text<T>(result: mpcore::Result<T>) -> String {
    match result {
        Ok(_) => "no error".to_owned(),
        Err(e) => e.to_string(),
    }
}
