//! The tasks, values and checks that the `pool_*.rs` tests share.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, raise};
use testkit::proc_state;

pub const LIMIT: Duration = Duration::from_secs(120);

/// A pool of `processes` workers started by `method`.
pub fn pool(method: mpcore::StartMethod, processes: usize) -> mpcore::Pool {
    mpcore::pool::Builder::new()
        .processes(processes)
        .start_method(method)
        .build()
        .unwrap_or_else(|e| panic!("a {method} pool: {e}"))
}

pub fn square(x: u64) -> u64 {
    x * x
}

/// The worker's pid and the square: shows who ran what.
pub fn square_with_pid(x: u64) -> (i32, u64) {
    (std::process::id() as i32, x * x)
}

pub fn sleep_ms(ms: u64) -> u64 {
    thread::sleep(Duration::from_millis(ms));
    ms
}

/// Waits until the file `path` exists (the test creates it when it wants
/// the task to finish), then returns `path`. Gating tasks on files keeps the
/// tests free of guesses about how fast this machine is.
pub fn wait_for_file(path: String) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::path::Path::new(&path).exists() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(2));
    }
    path
}

/// Creates the file `path` (so the test knows the task has started), then
/// sleeps far longer than any test waits.
pub fn announce_then_sleep(path: String) -> u64 {
    std::fs::write(&path, b"started").expect("write the marker");
    thread::sleep(Duration::from_secs(60));
    0
}

/// A fresh path in the temp dir, unique to this test process and call.
pub fn marker(name: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("mpcore-pool-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path.to_string_lossy().into_owned()
}

pub fn touch(path: &str) {
    std::fs::write(path, b"go").expect("create the marker");
}

pub fn wait_until_exists(path: &str) {
    while !std::path::Path::new(path).exists() {
        thread::sleep(Duration::from_millis(2));
    }
}

pub fn panics_on_3(x: u32) -> u32 {
    if x == 3 {
        panic!("task {x} failed");
    }
    x
}

/// Kills its own worker with SIGKILL in the middle of task 3.
pub fn killed_on_3(x: u32) -> u32 {
    if x == 3 {
        raise(Signal::SIGKILL).expect("raise");
        thread::sleep(Duration::from_secs(60));
    }
    x
}

pub fn exits_with_3(_: ()) -> u32 {
    std::process::exit(3)
}

/// The test process's pid, so that a value can tell whether it is in a
/// worker.
pub static TEST_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

pub fn in_a_worker() -> bool {
    std::process::id() != TEST_PID.load(std::sync::atomic::Ordering::SeqCst)
}

/// An argument whose `Deserialize` panics in a worker. (The caller reads
/// every argument back too, before it sends it; a panic there, in the test
/// process, would be printed under std's panic-output lock, which a worker
/// forked by another test at that instant would inherit held.)
#[derive(Debug, serde::Serialize)]
pub struct PanicsWhenDeserialized;

impl<'de> serde::Deserialize<'de> for PanicsWhenDeserialized {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if in_a_worker() {
            panic!("this argument refuses to be deserialized")
        }
        <()>::deserialize(d).map(|()| PanicsWhenDeserialized)
    }
}

/// A result whose `Serialize` panics (only workers encode results).
#[derive(Debug, serde::Deserialize)]
pub struct PanicsWhenSerialized;

impl serde::Serialize for PanicsWhenSerialized {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("this result refuses to be serialized")
    }
}

/// A value whose `Drop` panics in a worker, and only there.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct PanicsWhenDroppedInAWorker;

impl Drop for PanicsWhenDroppedInAWorker {
    fn drop(&mut self) {
        if in_a_worker() {
            panic!("this value refuses to be dropped in a worker");
        }
    }
}

pub fn takes_unreadable(_: PanicsWhenDeserialized) -> u32 {
    0
}

pub fn gives_unserializable(_: u32) -> PanicsWhenSerialized {
    PanicsWhenSerialized
}

pub fn gives_undroppable(_: u32) -> PanicsWhenDroppedInAWorker {
    PanicsWhenDroppedInAWorker
}

pub fn panics_with_an_undroppable_payload(_: u32) -> u32 {
    std::panic::panic_any(PanicsWhenDroppedInAWorker)
}

/// Fails unless every pid is gone from /proc: not running, not a zombie.
pub fn assert_all_gone(pids: &BTreeSet<i32>) {
    for &pid in pids {
        assert_eq!(proc_state(pid), None, "worker {pid} is still in /proc");
    }
}

/// A number that refuses to be serialized when it is 5.
#[derive(Debug, serde::Deserialize)]
pub struct NoFive(pub u32);

impl serde::Serialize for NoFive {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 5 {
            return Err(serde::ser::Error::custom("5 cannot travel"));
        }
        s.serialize_u32(self.0)
    }
}
