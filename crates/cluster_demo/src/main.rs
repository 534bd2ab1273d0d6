//! Beyond one machine: the Pool chapter's `map`, on workers in several
//! processes that talk over TCP, with timely-dataflow.
//!
//! The Python it mirrors (the 多进程 tutorial, section 5, and the CPU job of section 4):
//!
//! ```python
//! def job(x):
//!     return x*x
//!
//! pool = mp.Pool()
//! print(pool.map(job, range(10)))
//! # and the heavier job, cut into ten ranges of range(1000000):
//! print(sum(pool.map(cpu_job_range, [(a, a + 100000) for a in range(0, 1000000, 100000)])))
//! ```
//!
//! Every process runs this same program, and in every process the same
//! dataflow: worker 0 holds the inputs, an `exchange` deals input `i` to
//! worker `i % workers`, each worker runs `job` on its share, and a second
//! `exchange` brings every result back to worker 0, which puts them in
//! input order. See `map` below, and docs/11-beyond-one-machine.md.
//!
//! One command, two processes of this program on loopback (free ports, a
//! temporary hostfile; `just cluster` runs it):
//!
//!     cargo run -p cluster_demo -- --local 2
//!
//! Or by hand, in two shells on one machine (timely's own flags: `-w`
//! threads per process, `-n` processes, `-p` this one's index, `-h` a
//! hostfile of `host:port` lines; without `-h`, 127.0.0.1:2101, 2102, ...):
//!
//!     cargo run -p cluster_demo -- -n2 -p0
//!     cargo run -p cluster_demo -- -n2 -p1
//!
//! Process 0 prints `[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]`, which worker
//! (in which process, with which pid) ran which `x`, and the CPU job's sum
//! over `range(1000000)`, 249999833333583333000000 (the job summed once;
//! the tutorial's two jobs make twice that). The other processes say that
//! they took part. If a peer dies or never connects, every process ends
//! with an error within `--timeout` seconds (default 60), never a hang.

mod cli;
mod local;
mod supervise;

use std::cell::RefCell;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use timely::dataflow::operators::vec::{Map, ToStream};
use timely::dataflow::operators::{Exchange, Inspect};
use timely::worker::Worker;
use timely::{CommunicationConfig, ExchangeData};

use crate::cli::{Args, Error};

/// The tutorial's `job`.
fn job(x: u64) -> u64 {
    x * x
}

/// The tutorial's CPU job, `res += i + i**2 + i**3`, over one range.
fn cpu_job((start, end): (u64, u64)) -> u128 {
    course::job::cpu_job_range(start, end)
}

/// `range(1000000)` cut into ten ranges, the inputs of the heavier map.
fn ranges() -> Vec<(u64, u64)> {
    (0..10).map(|k| (k * 100_000, (k + 1) * 100_000)).collect()
}

/// One result, and who computed it.
#[derive(Clone, Serialize, Deserialize)]
struct Done<R> {
    /// The input's position: results arrive in any order, this restores it.
    index: usize,
    value: R,
    worker: usize,
    pid: u32,
}

/// `pool.map(f, inputs)` on timely: returns every result, in input order,
/// at worker 0, and nothing at the other workers.
fn map<T: ExchangeData, R: ExchangeData + Clone>(
    worker: &mut Worker,
    f: fn(T) -> R,
    inputs: Vec<T>,
) -> Vec<Done<R>> {
    let me = worker.index();
    let gathered = Rc::new(RefCell::new(Vec::new()));
    let sink = Rc::clone(&gathered);
    worker.dataflow::<(), _, _>(|scope| {
        // Worker 0 holds the inputs, as the parent holds them for a Pool.
        let inputs: Vec<(usize, T)> = match me {
            0 => inputs.into_iter().enumerate().collect(),
            _ => Vec::new(),
        };
        inputs
            .to_stream(scope)
            // Data moves by key: input i goes to worker i % workers.
            .exchange(|(i, _)| *i as u64)
            .map(move |(index, x)| Done {
                index,
                value: f(x),
                worker: me,
                pid: std::process::id(),
            })
            // Every result goes back to worker 0.
            .exchange(|_| 0)
            .inspect(move |done| sink.borrow_mut().push(done.clone()));
    });
    // Run until this dataflow is done everywhere: then worker 0 has all.
    while worker.has_dataflows() {
        worker.step_or_park(None);
    }
    let mut results = gathered.take();
    results.sort_by_key(|done| done.index);
    results
}

/// What each worker hands back: both maps' results (empty but at worker 0).
struct Report {
    squares: Vec<Done<u64>>,
    sums: Vec<Done<u128>>,
}

fn main() -> Result<(), Error> {
    let args = Args::parse(std::env::args().skip(1))?;
    if args.help {
        print!("{}", args.usage);
        return Ok(());
    }
    match args.local {
        Some(processes) => local::launch(processes, &args),
        None => run(&args),
    }
}

/// Runs this process's workers, and prints the gathered results in process 0.
fn run(args: &Args) -> Result<(), Error> {
    let config = args.timely_config()?;
    let (process, processes, threads) = match &config.communication {
        CommunicationConfig::Cluster {
            process,
            addresses,
            threads,
            ..
        } => (*process, addresses.len(), *threads),
        CommunicationConfig::Process(threads) | CommunicationConfig::ProcessBinary(threads) => {
            (0, 1, *threads)
        }
        CommunicationConfig::Thread => (0, 1, 1),
    };
    // --kill-process: the failure test's peer that dies mid-run.
    let doomed = args.kill_process == Some(process);

    let reports = supervise::execute(config, process, args.timeout, move |worker| {
        if doomed {
            supervise::kill_myself();
        }
        Report {
            squares: map(worker, job, (0..10).collect()),
            sums: map(worker, cpu_job, ranges()),
        }
    })?;

    if process != 0 {
        let mine: Vec<usize> = (process * threads..(process + 1) * threads).collect();
        println!(
            "process {process} of {processes}: workers {mine:?} did their share; \
             worker 0 in process 0 gathered the results"
        );
        return Ok(());
    }
    // Process 0's first worker is worker 0, the one that gathered.
    let Report { squares, sums } = &reports[0];
    let workers = processes * threads;
    println!(
        "== pool.map(job, range(10)) on {} in {} ==",
        plural(workers, "worker"),
        plural(processes, "process")
    );
    println!("{:?}", squares.iter().map(|d| d.value).collect::<Vec<_>>());
    println!("== who ran what ==");
    for w in 0..workers {
        let xs: Vec<usize> = squares
            .iter()
            .filter(|d| d.worker == w)
            .map(|d| d.index)
            .collect();
        let pid = squares.iter().find(|d| d.worker == w).map(|d| d.pid);
        let pid = pid.map_or("-".to_string(), |p| p.to_string());
        println!(
            "worker {w} (process {}, pid {pid}) ran x = {xs:?}",
            w / threads
        );
    }
    println!("== sum(pool.map(cpu_job, range(1000000) cut into 10 ranges)) ==");
    println!("{}", sums.iter().map(|d| d.value).sum::<u128>());
    Ok(())
}

/// "1 worker", "2 workers", "2 processes".
fn plural(n: usize, noun: &str) -> String {
    match (n, noun.ends_with('s')) {
        (1, _) => format!("1 {noun}"),
        (_, true) => format!("{n} {noun}es"),
        (_, false) => format!("{n} {noun}s"),
    }
}
