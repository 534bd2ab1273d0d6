//! The workloads that `just bench` (criterion) and `just compare` (the
//! side-by-side with Python) time, as plain functions.
//!
//! Each function does the whole workload once and returns a checkable
//! answer (a sum, a count): the callers check it once, outside the timed
//! loop, and the work cannot be folded away because its result is used.
//! `benches/python/mp_workloads.py` holds the same workloads in CPython's
//! `multiprocessing`, and [`WORKLOADS`] lists them with the sizes both
//! sides use.

// The package's `[lints]` (unsafe code forbidden) do not reach doc tests.
#![doc(test(attr(forbid(unsafe_code))))]

pub mod published;

use std::hint::black_box;

use mpcore::{
    Barrier, Dict, Event, JoinableQueue, Manager, Pipe, Pool, Process, Queue, Result, StartMethod,
    Value, process,
};

/// One row of the side-by-side table: a workload that exists in Python
/// (`benches/python/mp_workloads.py`, same name) and here.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// The name both sides use.
    pub name: &'static str,
    /// What one run does, for the table.
    pub what: &'static str,
    /// Operations in one full-size run (messages, tasks, increments...).
    pub ops: u64,
    /// Operations in one `--quick` run.
    pub quick_ops: u64,
    /// The unit the table reports: `"us/op"` (or `"ms/op"`) for latencies, `"msgs/s"`
    /// and the like for throughputs, `"MB/s"`, `"ns/iter"` (one step of
    /// the timing job's loop) or `"x normal"` (a speed-up over
    /// `timing_normal`).
    pub unit: &'static str,
}

/// The side-by-side workloads, in table order.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "spawn_join",
        what: "spawn + join, returning a u64",
        ops: 200,
        quick_ops: 10,
        unit: "us/op",
    },
    Workload {
        name: "spawn_join_spawn",
        what: "spawn + join, start method spawn",
        ops: 20,
        quick_ops: 2,
        unit: "us/op",
    },
    Workload {
        name: "spawn_join_forkserver",
        what: "spawn + join, start method forkserver",
        ops: 200,
        quick_ops: 10,
        unit: "us/op",
    },
    Workload {
        name: "pool_map10",
        what: "Pool(2) + map of 10 tiny tasks + close",
        ops: 20,
        quick_ops: 2,
        unit: "ms/op",
    },
    Workload {
        name: "queue_small",
        what: "Queue, 100,000 small ints child to parent",
        ops: 100_000,
        quick_ops: 1_000,
        unit: "msgs/s",
    },
    Workload {
        name: "queue_1mib",
        what: "Queue, 1 MiB byte messages child to parent",
        ops: 200,
        quick_ops: 4,
        unit: "MB/s",
    },
    Workload {
        name: "pool_map_tiny",
        what: "Pool(2).map, 100,000 tiny tasks, default chunks",
        ops: 100_000,
        quick_ops: 1_000,
        unit: "tasks/s",
    },
    Workload {
        name: "pool_map_chunk1",
        what: "Pool(2).map, 20,000 tasks, chunksize 1",
        ops: 20_000,
        quick_ops: 200,
        unit: "tasks/s",
    },
    Workload {
        name: "map_async",
        what: "Pool(2).map_async + get, 100,000 tiny tasks, default chunks",
        ops: 100_000,
        quick_ops: 1_000,
        unit: "tasks/s",
    },
    Workload {
        name: "apply_async_rtt",
        what: "apply_async(..).get() round trip",
        ops: 2_000,
        quick_ops: 20,
        unit: "us/op",
    },
    Workload {
        name: "value_incr",
        what: "2 processes x 100,000 locked Value increments",
        ops: 200_000,
        quick_ops: 2_000,
        unit: "incr/s",
    },
    Workload {
        name: "event_wake",
        what: "Event set-to-wake, ping-pong between 2 processes",
        ops: 2_000,
        quick_ops: 20,
        unit: "us/op",
    },
    Workload {
        name: "barrier_round",
        what: "Barrier(2) round between 2 processes",
        ops: 2_000,
        quick_ops: 20,
        unit: "us/op",
    },
    Workload {
        name: "joinable_queue",
        what: "JoinableQueue, 100,000 put/get/task_done, then join",
        ops: 100_000,
        quick_ops: 1_000,
        unit: "items/s",
    },
    Workload {
        name: "semaphore_uncontended",
        what: "Semaphore acquire + release, uncontended",
        ops: 1_000_000,
        quick_ops: 10_000,
        unit: "us/op",
    },
    Workload {
        name: "condition_pingpong",
        what: "Condition ping-pong round trip between 2 processes",
        ops: 20_000,
        quick_ops: 200,
        unit: "us/op",
    },
    Workload {
        name: "manager_dict",
        what: "Manager dict, d[k] = v then d[k] (two proxy calls)",
        ops: 2_000,
        quick_ops: 20,
        unit: "us/op",
    },
    Workload {
        name: "manager_update",
        what: "Manager dict, 8 processes x 10,000 atomic increments of one key",
        ops: 80_000,
        quick_ops: 800,
        unit: "incr/s",
    },
    Workload {
        name: "timing_normal",
        what: "timing job x2, one after the other",
        ops: TIMING_N,
        quick_ops: 1_000_000,
        unit: "ns/iter",
    },
    Workload {
        name: "timing_threads",
        what: "timing job x2, 2 threads",
        ops: TIMING_N,
        quick_ops: 1_000_000,
        unit: "x normal",
    },
    Workload {
        name: "timing_processes",
        what: "timing job x2, 2 processes",
        ops: TIMING_N,
        quick_ops: 1_000_000,
        unit: "x normal",
    },
    Workload {
        name: "pipe_rtt",
        what: "Pipe round trip of an int, parent and child",
        ops: 20_000,
        quick_ops: 200,
        unit: "us/op",
    },
    Workload {
        name: "pipe_1mib",
        what: "Pipe send_bytes/recv_bytes, 1 MiB child to parent",
        ops: 200,
        quick_ops: 4,
        unit: "MB/s",
    },
    Workload {
        name: "listener_rtt",
        what: "Listener/Client connect + round trip + close",
        ops: 2_000,
        quick_ops: 20,
        unit: "us/op",
    },
];

/// Workloads that only `mp_workloads.py` has, printed after those of
/// [`WORKLOADS`]: CPython's pool under its other two start methods. The
/// side-by-side pairs mpcore's `pool_map10` (the default method) with
/// `pool_map10_forkserver`; the others are there for chapter 12's table
/// of costs, whose mpcore columns come from criterion.
pub const PYTHON_ONLY: &[&str] = &[
    "pool_map10_spawn",
    "pool_map10_forkserver",
    "apply_async_rtt_spawn",
    "apply_async_rtt_forkserver",
];

/// The loop length of one timing job here: `timing_demo`'s default, about
/// 0.2 s per job. Python runs the tutorial's `range(1000000)`, as long a
/// time; the table compares the speed-ups over `normal`, and the time per
/// loop step.
pub const TIMING_N: u64 = 200_000_000;

/// Looks a workload up by name.
pub fn workload(name: &str) -> Option<&'static Workload> {
    WORKLOADS.iter().find(|w| w.name == name)
}

/// Size of one message of `queue_1mib`.
pub const MIB: usize = 1 << 20;

/// Forks a child that returns `x + 1`; joins it. Returns the value.
pub fn spawn_join(x: u64) -> Result<u64> {
    let x = black_box(x);
    Process::spawn(move || x + 1)?.join()
}

/// The task of [`spawn_join_with`]: a plain `fn`, which every start method
/// can run (a spawned child cannot receive a closure).
pub fn plus_one(x: u64) -> u64 {
    x + 1
}

/// Starts a child by `method` that returns `x + 1`; joins it. Returns the
/// value.
///
/// # Errors
///
/// Whatever the start or the join gives.
pub fn spawn_join_with(method: StartMethod, x: u64) -> Result<u64> {
    process::Builder::new()
        .start_method(method)
        .spawn_fn(plus_one, black_box(x))?
        .join()
}

/// `Pool(2)`, a `map` of 10 tiny tasks, `close` and `join`: what a short
/// pool costs from start to end. Returns the sum, 90.
pub fn pool_map10(pool: Pool) -> Result<u64> {
    let sum = pool.map(tiny, 0..10)?.iter().sum();
    pool.close();
    pool.join()?;
    Ok(sum)
}

/// A pool of 2 workers started by `method`, for [`pool_map10`].
pub fn pool2(method: StartMethod) -> Result<Pool> {
    mpcore::pool::Builder::new()
        .processes(2)
        .start_method(method)
        .build()
}

/// A child puts `0..n` on a queue; the parent gets them all. Returns the sum.
pub fn queue_small(n: u64) -> Result<u64> {
    let q: Queue<u64> = Queue::new()?;
    let child_q = q.clone();
    let mut child = Process::spawn(move || {
        for i in 0..n {
            child_q.put(black_box(i)).unwrap();
        }
    })?;
    let mut sum = 0;
    for _ in 0..n {
        sum += q.get()?;
    }
    child.join()?;
    Ok(sum)
}

/// The expected answer of [`queue_small`].
pub fn queue_small_answer(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

/// A child puts `count` messages of 1 MiB of bytes on a queue
/// ([`Queue::put_bytes`]); the parent gets them. Returns the bytes received.
pub fn queue_1mib(count: u64) -> Result<u64> {
    let q: Queue<Vec<u8>> = Queue::new()?;
    let child_q = q.clone();
    let mut child = Process::spawn(move || {
        let message = vec![7u8; MIB];
        for _ in 0..count {
            child_q.put_bytes(black_box(&message)).unwrap();
        }
    })?;
    let mut total = 0u64;
    for _ in 0..count {
        let message = q.get_bytes()?;
        total += message.len() as u64;
        black_box(message);
    }
    child.join()?;
    Ok(total)
}

/// Ping-pong between this process and a child over two queues, `rounds`
/// times: put a number, the child gets it and puts it back plus one.
/// Returns the sum of the replies.
pub fn queue_pingpong(rounds: u64) -> Result<u64> {
    let (ping, pong): (Queue<u64>, Queue<u64>) = (Queue::new()?, Queue::new()?);
    let (child_ping, child_pong) = (ping.clone(), pong.clone());
    let mut child = Process::spawn(move || {
        for _ in 0..rounds {
            let x = child_ping.get().unwrap();
            child_pong.put(x + 1).unwrap();
        }
    })?;
    let mut sum = 0;
    for i in 0..rounds {
        ping.put(i)?;
        sum += pong.get()?;
    }
    child.join()?;
    Ok(sum)
}

/// The tiny task of the pool workloads.
pub fn tiny(x: u64) -> u64 {
    x * 2
}

/// `pool.map(tiny, 0..n)` with Python's default chunking; returns the sum.
pub fn pool_map_tiny(pool: &Pool, n: u64) -> Result<u64> {
    Ok(pool.map(tiny, 0..n)?.iter().sum())
}

/// `pool.map(tiny, 0..n, chunksize=1)`; returns the sum.
pub fn pool_map_chunk1(pool: &Pool, n: u64) -> Result<u64> {
    Ok(pool.map_chunked(tiny, 0..n, 1)?.iter().sum())
}

/// `pool.map_async(tiny, 0..n)?.get()` with Python's default chunking;
/// returns the sum.
pub fn pool_map_async_tiny(pool: &Pool, n: u64) -> Result<u64> {
    Ok(pool.map_async(tiny, 0..n)?.get()?.iter().sum())
}

/// The expected answer of both pool maps over `0..n`.
pub fn pool_map_answer(n: u64) -> u64 {
    n * n.saturating_sub(1)
}

/// `n` times `pool.apply_async(tiny, i).get()`; returns the sum.
pub fn apply_async_rtt(pool: &Pool, n: u64) -> Result<u64> {
    let mut sum = 0;
    for i in 0..n {
        sum += pool.apply_async(tiny, i)?.get()?;
    }
    Ok(sum)
}

/// `procs` processes each add 1 to one shared `Value` `per_proc` times,
/// under the value's lock. Returns the final value.
pub fn value_incr(procs: usize, per_proc: u64) -> Result<i64> {
    let v = Value::new(0i64)?;
    let children = (0..procs)
        .map(|_| {
            let v = v.clone();
            Process::spawn(move || {
                for _ in 0..per_proc {
                    *v.lock().unwrap() += 1;
                }
            })
        })
        .collect::<Result<Vec<_>>>()?;
    for mut child in children {
        child.join()?;
    }
    v.get()
}

/// Ping-pong with two events between this process and a child, `rounds`
/// times: set `ping`, the child wakes, clears it and sets `pong`, we wake
/// and clear `pong`. Returns the rounds done.
pub fn event_wake(rounds: u64) -> Result<u64> {
    let (ping, pong) = (Event::new()?, Event::new()?);
    let (child_ping, child_pong) = (ping.clone(), pong.clone());
    let mut child = Process::spawn(move || {
        for _ in 0..rounds {
            child_ping.wait().unwrap();
            child_ping.clear();
            child_pong.set();
        }
    })?;
    for _ in 0..rounds {
        ping.set();
        pong.wait()?;
        pong.clear();
    }
    child.join()?;
    Ok(rounds)
}

/// A `Barrier(2)` that this process and a child pass together `rounds`
/// times. Returns the rounds done.
pub fn barrier_round(rounds: u64) -> Result<u64> {
    let barrier = Barrier::new(2)?;
    let child_barrier = barrier.clone();
    let mut child = Process::spawn(move || {
        for _ in 0..rounds {
            child_barrier.wait().unwrap();
        }
    })?;
    for _ in 0..rounds {
        barrier.wait()?;
    }
    child.join()?;
    Ok(rounds)
}

/// Puts `0..n` into a `JoinableQueue` that a child takes from, marking
/// each item done, and waits with `join` until all are done. Returns the
/// sum the child got: [`queue_small_answer`].
pub fn joinable_queue(n: u64) -> Result<u64> {
    let q = JoinableQueue::new()?;
    let child_q = q.clone();
    let mut child = Process::spawn(move || {
        let mut total = 0;
        for _ in 0..n {
            total += child_q.get().unwrap();
            child_q.task_done().unwrap();
        }
        total
    })?;
    for i in 0..n {
        q.put(i)?;
    }
    q.join()?;
    child.join()
}

/// `n` acquire + release pairs of a semaphore nobody else uses (the
/// permit given back as it drops). Returns the pairs done.
pub fn semaphore_uncontended(n: u64) -> Result<u64> {
    let sem = mpcore::Semaphore::new(1)?;
    let mut done = 0;
    for _ in 0..n {
        let permit = sem.acquire()?;
        done += 1;
        drop(permit);
    }
    Ok(done)
}

/// One side of [`condition_pingpong`]: waits for each of its turns (`odd`:
/// the child's), takes it and wakes the other side.
fn take_turns(cond: &mpcore::Condition, turn: &Value<u64>, rounds: u64, odd: u64) -> Result<()> {
    for i in 0..rounds {
        let mine = 2 * i + odd;
        let guard = cond.acquire()?;
        let guard = guard.wait_for(|| turn.get().is_ok_and(|t| t == mine))?;
        turn.set(mine + 1)?;
        guard.notify(1);
    }
    Ok(())
}

/// This process and a child take turns `rounds` times each, waiting on one
/// `Condition` for the other's notify. Returns the rounds done.
pub fn condition_pingpong(rounds: u64) -> Result<u64> {
    let cond = mpcore::Condition::new()?;
    let turn = Value::new(0u64)?;
    let mut child = Process::spawn({
        let (cond, turn) = (cond.clone(), turn.clone());
        move || take_turns(&cond, &turn, rounds, 1).is_ok()
    })?;
    take_turns(&cond, &turn, rounds, 0)?;
    assert!(child.join()?, "the child's turns failed");
    assert_eq!(turn.get()?, 2 * rounds);
    Ok(rounds)
}

/// `n` times `d[k] = i` then `d[k]` on a manager's dict: two proxy calls
/// each. Returns the sum of what was read back.
pub fn manager_dict(d: &Dict<String, u64>, n: u64) -> Result<u64> {
    let key = "k".to_owned();
    (0..n).try_fold(0, |sum, i| {
        d.insert(key.clone(), i)?;
        Ok(sum + d.get(&key)?.unwrap_or(0))
    })
}

/// The answer of [`manager_dict`].
pub fn manager_dict_answer(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

/// `procs` processes each add 1 to one key of a dict of `manager`
/// `per_proc` times with `update_with`. Returns the final count.
pub fn manager_update(manager: &Manager, procs: u64, per_proc: u64) -> Result<u64> {
    let d = manager.dict::<u8, u64>()?;
    let children = (0..procs)
        .map(|_| {
            let d = d.clone();
            Process::spawn(move || {
                for _ in 0..per_proc {
                    d.update_with(&0, |n| Some(n.unwrap_or(0) + 1)).unwrap();
                }
            })
        })
        .collect::<Result<Vec<_>>>()?;
    for mut child in children {
        child.join()?;
    }
    Ok(d.get(&0)?.unwrap_or(0))
}

/// The tutorial's `normal()`: the job twice, one after the other.
pub fn timing_normal(n: u64) -> u128 {
    course::job::cpu_job(n) + course::job::cpu_job(n)
}

/// The tutorial's `multithread()`: the job in 2 threads.
pub fn timing_threads(n: u64) -> u128 {
    let t1 = std::thread::spawn(move || course::job::cpu_job(n));
    let t2 = std::thread::spawn(move || course::job::cpu_job(n));
    t1.join().expect("job thread") + t2.join().expect("job thread")
}

/// The tutorial's `multicore()`: the job in 2 processes.
pub fn timing_processes(n: u64) -> Result<u128> {
    let mut p1 = Process::spawn(move || course::job::cpu_job(n))?;
    let mut p2 = Process::spawn(move || course::job::cpu_job(n))?;
    Ok(p1.join()? + p2.join()?)
}

/// `rounds` round trips over a [`Pipe`]: send `i`, a child sends it
/// back. Returns the sum of the replies.
pub fn pipe_rtt(rounds: u64) -> Result<u64> {
    let (mine, theirs) = Pipe::new::<u64, u64>()?;
    let mut child = Process::spawn(move || {
        for _ in 0..rounds {
            let x = theirs.recv().unwrap();
            theirs.send(&x).unwrap();
        }
    })?;
    let mut sum = 0;
    for i in 0..rounds {
        mine.send(&black_box(i))?;
        sum += mine.recv()?;
    }
    child.join()?;
    Ok(sum)
}

/// The floor under [`pipe_rtt`]: the same child (forked by mpcore) and
/// `rounds` round trips of 8 bytes over a bare Unix socket pair
/// (`UnixStream::pair`: `write` and `read`, no framing, no encoding).
pub fn socketpair_rtt(rounds: u64) -> Result<u64> {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let io = |e: std::io::Error| mpcore::Error::Io {
        call: "socketpair",
        reason: e.to_string(),
    };
    let (mut mine, mut theirs) = UnixStream::pair().map_err(io)?;
    let mut child = Process::spawn(move || {
        let mut buf = [0u8; 8];
        for _ in 0..rounds {
            theirs.read_exact(&mut buf).unwrap();
            theirs.write_all(&buf).unwrap();
        }
    })?;
    let mut sum = 0;
    let mut buf = [0u8; 8];
    for i in 0..rounds {
        mine.write_all(&black_box(i).to_le_bytes()).map_err(io)?;
        mine.read_exact(&mut buf).map_err(io)?;
        sum += u64::from_le_bytes(buf);
    }
    child.join()?;
    Ok(sum)
}

/// A child sends `count` messages of 1 MiB of bytes through a one-way
/// [`Pipe`] ([`Connection::send_bytes`](mpcore::Connection::send_bytes));
/// the parent receives them. Returns the bytes received. The same as
/// [`queue_1mib`], through a pipe.
pub fn pipe_1mib(count: u64) -> Result<u64> {
    let (rx, tx) = Pipe::one_way::<()>()?;
    let mut child = Process::spawn(move || {
        let message = vec![7u8; MIB];
        for _ in 0..count {
            tx.send_bytes(black_box(&message)).unwrap();
        }
    })?;
    let mut total = 0u64;
    for _ in 0..count {
        let message = rx.recv_bytes()?;
        total += message.len() as u64;
        black_box(message);
    }
    child.join()?;
    Ok(total)
}

/// A child connects `count` times to a [`Listener`](mpcore::connection::Listener)
/// of this process, sends `i`, waits for it back and closes; this
/// process accepts each and echoes. Returns the sum of what came.
pub fn listener_rtt(count: u64) -> Result<u64> {
    use mpcore::connection::{Client, Listener};
    let path = std::env::temp_dir().join(format!("mpbench-{}.sock", std::process::id()));
    let listener = Listener::bind(&path)?;
    let mut child = Process::spawn(move || {
        for i in 0..count {
            let c = Client::connect::<u64, u64>(&path).unwrap();
            c.send(&i).unwrap();
            assert_eq!(c.recv().unwrap(), i);
        }
    })?;
    let mut sum = 0;
    for _ in 0..count {
        let c = listener.accept::<u64, u64>()?;
        let x = c.recv()?;
        c.send(&x)?;
        sum += x;
    }
    child.join()?;
    Ok(sum)
}
