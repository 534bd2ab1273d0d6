//! The wongwonggoods tutorial, "多個 Process 同時平行處理": five processes print as they run,
//! in whatever order the scheduler picks; joining them in order gives
//! their results in order.
//!
//! The Python it mirrors:
//!
//! ```python
//! def task(num):
//!     print('This is Process: ', num)
//!
//! process_list = []
//! for i in range(5):
//!     process_list.append(mp.Process(target=task, args=(i,)))
//!     process_list[i].start()
//! for i in range(5):
//!     process_list[i].join()
//! ```
//!
//! Run it with
//!
//!     cargo run -p join_demo
//!
//! The five `This is Process:  i` lines come in a different order from run
//! to run, and the parent's `joined` lines may fall between them: neither
//! is guaranteed. What is guaranteed: the `joined` lines come as 0, 1, 2,
//! 3, 4, because `join` on the i-th process waits for that one, and each
//! comes after its own process printed (the child had finished).

use mpcore::Process;

const NUM_PROCESS: u32 = 5;

/// The wongwonggoods tutorial's `task(num)`, which also returns what it was given, with the
/// pid that ran it, so the parent can show it collected them in order.
fn task(num: u32) -> (u32, u32) {
    // Python's print puts a space between its arguments, hence two spaces.
    println!("This is Process:  {num}");
    (num, std::process::id())
}

fn main() -> Result<(), mpcore::Error> {
    let mut process_list = Vec::new();
    for i in 0..NUM_PROCESS {
        process_list.push(Process::spawn(move || task(i))?);
    }
    let mut results = Vec::new();
    for p in &mut process_list {
        let (num, pid) = p.join()?;
        println!("joined process {num} (pid {pid})");
        results.push(num);
    }
    println!("results in join order: {results:?}");
    Ok(())
}
