//! The wongwonggoods tutorial, "利用 multiprocessing 模組查看自己的CPU「有多少核心」": ask how
//! many CPUs there are and start one process per CPU.
//!
//! The Python it mirrors:
//!
//! ```python
//! def task(num):
//!     print('This is cpu core: ', num)
//!
//! cpu_count = mp.cpu_count()
//! print("cpu_count: ", cpu_count)
//! process_list = []
//! for i in range(cpu_count):
//!     process_list.append(mp.Process(target=task, args=(i,)))
//!     process_list[i].start()
//! for i in range(cpu_count):
//!     process_list[i].join()
//! ```
//!
//! Run it with
//!
//!     cargo run -p cpu_count_demo
//!
//! On a 2-core machine it prints `cpu_count:  2` and then `This is cpu
//! core:  0` and `This is cpu core:  1`, in either order.
//!
//! `mpcore::cpu_count()` counts the CPUs this process may run on (its
//! affinity mask and cgroup quota); Python's counts every CPU of the
//! machine. Try `taskset -c 0 cargo run -p cpu_count_demo` to see the
//! difference: Rust says 1, `python3 -c 'import multiprocessing as mp;
//! print(mp.cpu_count())'` under the same taskset still says 2.

use mpcore::Process;

fn task(num: usize) {
    println!("This is cpu core:  {num}");
}

fn main() -> Result<(), mpcore::Error> {
    let cpu_count = mpcore::cpu_count();
    println!("cpu_count:  {cpu_count}");
    let mut process_list = Vec::new();
    for i in 0..cpu_count {
        process_list.push(Process::spawn(move || task(i))?);
    }
    for p in &mut process_list {
        p.join()?;
    }
    Ok(())
}
