//! Section 3 of the 多进程 tutorial, "存储进程输出 Queue": two processes compute the
//! same job and put their results on a Queue; the parent gets both and
//! prints the sum.
//!
//! The Python it mirrors:
//!
//! ```python
//! def job(q):
//!     res = 0
//!     for i in range(1000):
//!         res += i + i**2 + i**3
//!     q.put(res)
//!
//! q = mp.Queue()
//! p1 = mp.Process(target=job, args=(q,))
//! p2 = mp.Process(target=job, args=(q,))
//! p1.start(); p2.start()
//! p1.join(); p2.join()
//! res1 = q.get()
//! res2 = q.get()
//! print(res1 + res2)
//! ```
//!
//! Run it with
//!
//!     cargo run -p queue_demo
//!
//! It prints `499667166000`, as in the tutorial, then where each half came
//! from.

use mpcore::{Process, Queue};

/// The tutorial's job: like Python's, it returns nothing and puts its
/// result on the queue. Each result carries the pid that computed it.
fn job(q: Queue<(u64, u32)>) -> Result<(), mpcore::Error> {
    let mut res = 0u64;
    for i in 0..1000u64 {
        res += i + i.pow(2) + i.pow(3);
    }
    q.put((res, std::process::id()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let q = Queue::new()?;
    // Each child gets its own handle to the same queue, as `args=(q,)` does.
    let (q1, q2) = (q.clone(), q.clone());
    // A child's error travels back as text: the outer `?` below says the
    // process failed, the inner one that its job did.
    let mut p1 = Process::spawn(move || job(q1).map_err(|e| e.to_string()))?;
    let mut p2 = Process::spawn(move || job(q2).map_err(|e| e.to_string()))?;
    // Joining before getting is safe here: a put never waits for a get
    // unless the queue's buffer is full, and two numbers do not fill it.
    p1.join()??;
    p2.join()??;
    let (res1, pid1) = q.get()?;
    let (res2, pid2) = q.get()?;
    println!("{}", res1 + res2);
    println!("res1 = {res1} from pid {pid1}");
    println!("res2 = {res2} from pid {pid2}");
    Ok(())
}
