//! How a child ends: a panic or an unwinding that must not reach the
//! parent's code, a kernel that reaps children itself, a pool task's panic.

use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mpcore::Process;
use mpcore::process::Builder;
use serde::{Deserialize, Serialize};

use crate::start_method;

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

pub(crate) fn unwind_after_fork(kind: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
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

pub(crate) fn sigchld_ignored() -> Result<(), Box<dyn std::error::Error>> {
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

pub(crate) fn pool_panic(method: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
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
