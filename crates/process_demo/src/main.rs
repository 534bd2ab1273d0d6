//! Section 2 of the 多进程 tutorial ("添加进程 Process") and the first
//! example of the wongwonggoods tutorial: start a function in a thread and
//! in a process, then join both.
//!
//! The Python it mirrors:
//!
//! ```python
//! def job(a, d):
//!     print('aaaaa')
//!
//! t1 = td.Thread(target=job, args=(1, 2))
//! p1 = mp.Process(target=job, args=(1, 2))
//! t1.start(); p1.start()
//! t1.join(); p1.join()
//!
//! def task(a, b):
//!     print('Task in the Process.')
//!     print(a, b)
//! ```
//!
//! Run it with
//!
//!     cargo run -p process_demo
//!
//! It prints `aaaaa` twice (thread and process), then `Task in the
//! Process.` and `1 2`, then the process ids that show what really ran
//! where: the thread inside this process, the process as a forked copy.

use std::thread;

use mpcore::Process;

/// The 多进程 tutorial's `job(a, d)`: it ignores its arguments, as in the tutorial.
fn job(_a: i32, _d: i32) {
    println!("aaaaa");
}

/// The wongwonggoods tutorial's `task(a, b)`.
fn task(a: i32, b: i32) {
    println!("Task in the Process.");
    println!("{a} {b}");
}

fn main() -> Result<(), mpcore::Error> {
    println!("== the 多进程 tutorial: job(1, 2) in a thread and in a process ==");
    let t1 = thread::spawn(|| job(1, 2));
    let mut p1 = Process::spawn(|| job(1, 2))?;
    t1.join().expect("the thread does not panic");
    p1.join()?;

    println!("== the wongwonggoods tutorial: task(1, 2) in a process ==");
    let mut p1 = Process::spawn(|| task(1, 2))?;
    p1.join()?;

    println!("== underneath: who ran where ==");
    let main_pid = std::process::id();
    let thread_pid = thread::spawn(std::process::id).join().expect("no panic");
    // The child returns its own pid and its parent's: join carries values.
    let mut p = Process::spawn(|| (std::process::id(), std::os::unix::process::parent_id()))?;
    let (child_pid, childs_parent) = p.join()?;
    println!("main     pid {main_pid}");
    println!("thread   pid {thread_pid} (the same process: it shares this memory)");
    println!("process  pid {child_pid}, parent {childs_parent} (a forked copy of this one)");
    Ok(())
}
