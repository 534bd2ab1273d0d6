//! Children left running when their parent is killed: a process's, a
//! pool worker's, under each start method.

use std::io::Write;
use std::thread;
use std::time::Duration;

use mpcore::process::Builder;

use crate::{sleep_for, start_method};

pub(crate) fn pool_orphan(method: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
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

pub(crate) fn orphan(method: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
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

/// A manager's server (started by `method`) in use, then its owner sleeps
/// until the test kills it: prints the server's pid as `child-pid N`.
pub(crate) fn manager_orphan(method: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let manager = mpcore::Manager::with_start_method(start_method(method)?)?;
    let dict = manager.dict::<u32, u32>()?;
    dict.insert(1, 2)?;
    if dict.get(&1)? != Some(2) {
        return Err("the manager's dict went wrong".into());
    }
    println!("child-pid {}", manager.pid());
    std::io::stdout().flush()?;
    thread::sleep(Duration::from_secs(120));
    Err("the test should have killed this process".into())
}
