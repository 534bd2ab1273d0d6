//! Section 4 of seed 001 ("效率对比 threading & multiprocessing"): the same
//! CPU-bound job done three ways, one after the other, timed.
//!
//! The Python it mirrors:
//!
//! ```python
//! def job(q):
//!     res = 0
//!     for i in range(1000000):
//!         res += i + i**2 + i**3
//!     q.put(res)
//!
//! def normal():      # the job twice, one after the other
//! def multithread(): # two threads, results through a Queue
//! def multicore():   # two processes, results through a Queue
//! ```
//!
//! The tutorial measured 1.13 s (normal), 1.30 s (threads) and 0.64 s
//! (processes): CPython's threads cannot run Python code at the same time
//! (the GIL), processes can. Rust has no GIL, so here threads scale too.
//!
//! Run it (release mode, or the times say little) with
//!
//!     cargo run --release -p timing_demo
//!     cargo run --release -p timing_demo -- --n 1000000 --gil --io --svg timeline.svg
//!
//! It prints one table row per way: how many workers, the result (equal
//! for every way, `499999666667166666000000` with `--n 1000000`, as in the
//! tutorial), the time, and the speed-up over `normal`. `--gil` adds a row
//! where the threads share one global lock, a simulated GIL; `--io` adds a
//! second table for an I/O-bound job; `--svg` draws each way's timeline.

use std::error::Error;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use mpcore::job::cpu_job_range;
use mpcore::{Process, Queue};

mod timeline;

/// About 0.22 s per job in release mode on this course's 2-core machine,
/// so that the whole run (2 + 1 + 1 job-times) takes about a second.
const DEFAULT_N: u64 = 200_000_000;

/// The simulated GIL is taken for this many loop steps at a time.
const GIL_STEP: u64 = 100_000;

/// The I/O-bound job: this many requests, each waiting this long for its
/// reply, like a crawler waiting for web pages.
const IO_REQUESTS: u64 = 10;
const IO_WAIT: Duration = Duration::from_millis(20);
/// Loop steps of work to handle each reply.
const IO_REPLY_WORK: u64 = 1000;

#[derive(Parser)]
#[command(about = "normal vs threads vs processes on the tutorial's job")]
struct Args {
    /// Loop length of one job: the tutorial's range(1000000) is --n 1000000.
    #[arg(long, default_value_t = DEFAULT_N)]
    n: u64,
    /// How many jobs run, and so how many threads or processes (the tutorial's 2).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Add a row where the threads take one global lock, a simulated GIL.
    #[arg(long)]
    gil: bool,
    /// Also compare the three ways on an I/O-bound job.
    #[arg(long)]
    io: bool,
    /// Write a timeline of every way to this SVG file.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

/// One job, as a value that can be copied into a thread or a process.
#[derive(Clone, Copy)]
enum Job {
    /// The tutorial's loop over `0..n`.
    Cpu { n: u64 },
    /// Wait for `IO_REQUESTS` replies, handling each one briefly.
    Io,
}

impl Job {
    /// Runs the job; with a `gil`, holds it while computing, never while
    /// waiting, as CPython releases its GIL around blocking I/O.
    fn run(self, gil: Option<&Mutex<()>>) -> u128 {
        let hold = || gil.map(|g| g.lock().unwrap_or_else(PoisonError::into_inner));
        match self {
            Job::Cpu { n } => match gil {
                None => cpu_job_range(0, n),
                Some(_) => (0..n)
                    .step_by(GIL_STEP as usize)
                    .map(|start| {
                        let _gil = hold();
                        cpu_job_range(start, (start + GIL_STEP).min(n))
                    })
                    .sum(),
            },
            Job::Io => (0..IO_REQUESTS)
                .map(|request| {
                    thread::sleep(IO_WAIT);
                    let _gil = hold();
                    let start = request * IO_REPLY_WORK;
                    cpu_job_range(start, start + IO_REPLY_WORK)
                })
                .sum(),
        }
    }
}

/// What one worker sends back: its lane, its result, and when it started
/// and ended its work, in seconds since the way began.
type Report = (usize, u128, f64, f64);

/// One way's measurement: a table row and a timeline panel.
struct Way {
    name: &'static str,
    workers: usize,
    result: u128,
    elapsed: Duration,
    lanes: Vec<String>,
    /// (lane, start, end) of each job, in seconds since the way began.
    bars: Vec<(usize, f64, f64)>,
}

/// The tutorial's `normal()`: every job in this thread, one after another.
fn normal(job: Job, jobs: usize) -> Way {
    let t0 = Instant::now();
    let mut result = 0;
    let mut bars = Vec::new();
    for _ in 0..jobs {
        let start = t0.elapsed().as_secs_f64();
        result += job.run(None);
        bars.push((0, start, t0.elapsed().as_secs_f64()));
    }
    Way {
        name: "normal",
        workers: 1,
        result,
        elapsed: t0.elapsed(),
        lanes: vec!["main thread".to_owned()],
        bars,
    }
}

/// The tutorial's `multithread()`: one thread per job, results through a
/// Queue, as the tutorial does (an mpcore `Queue` works across threads
/// too). With `gil`, every thread takes the same lock to compute.
fn multithread(job: Job, workers: usize, gil: bool) -> Result<Way, Box<dyn Error>> {
    let q = Queue::<Report>::new()?;
    let lock = Arc::new(Mutex::new(()));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..workers)
        .map(|lane| {
            let (q, lock) = (q.clone(), Arc::clone(&lock));
            thread::spawn(move || {
                let start = t0.elapsed().as_secs_f64();
                let res = job.run(gil.then_some(&*lock));
                q.put((lane, res, start, t0.elapsed().as_secs_f64()))
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "a worker thread panicked")??;
    }
    let elapsed = t0.elapsed();
    let reports = (0..workers)
        .map(|_| q.get())
        .collect::<Result<Vec<_>, _>>()?;
    let lane_name = |i| format!("thread {}", i + 1);
    Ok(collect(
        if gil {
            "multithread + GIL"
        } else {
            "multithread"
        },
        elapsed,
        reports,
        (0..workers).map(lane_name).collect(),
    ))
}

/// The tutorial's `multicore()`: one process per job, results through a
/// Queue. The processes are forked here, so their start-up is timed too.
fn multicore(job: Job, workers: usize) -> Result<Way, Box<dyn Error>> {
    let q = Queue::<Report>::new()?;
    let t0 = Instant::now();
    let mut processes = Vec::new();
    for lane in 0..workers {
        let q = q.clone();
        // `t0` is copied into the child. `Instant` reads CLOCK_MONOTONIC,
        // one clock for the whole machine, so the child's times line up
        // with ours.
        processes.push(Process::spawn(move || {
            let start = t0.elapsed().as_secs_f64();
            let res = job.run(None);
            q.put((lane, res, start, t0.elapsed().as_secs_f64()))
                .is_ok()
        })?);
    }
    let mut lanes = Vec::new();
    for p in &mut processes {
        lanes.push(format!("process {}", p.pid()));
        if !p.join()? {
            return Err(format!("process {} could not put its result", p.pid()).into());
        }
    }
    let elapsed = t0.elapsed();
    let reports = (0..workers)
        .map(|_| q.get())
        .collect::<Result<Vec<_>, _>>()?;
    Ok(collect("multicore", elapsed, reports, lanes))
}

fn collect(
    name: &'static str,
    elapsed: Duration,
    mut reports: Vec<Report>,
    lanes: Vec<String>,
) -> Way {
    // The queue hands reports over in the order they came: sort by lane.
    reports.sort_by_key(|r| r.0);
    Way {
        name,
        workers: lanes.len(),
        result: reports.iter().map(|r| r.1).sum(),
        elapsed,
        bars: reports
            .iter()
            .map(|&(lane, _, s, e)| (lane, s, e))
            .collect(),
        lanes,
    }
}

/// Runs every way on `job`, checks that they agree, prints the table.
fn compare(title: &str, job: Job, args: &Args) -> Result<Vec<Way>, Box<dyn Error>> {
    let mut ways = vec![
        normal(job, args.workers),
        multithread(job, args.workers, false)?,
        multicore(job, args.workers)?,
    ];
    if args.gil {
        ways.push(multithread(job, args.workers, true)?);
    }
    // Check the answers before showing any time.
    for way in &ways[1..] {
        if way.result != ways[0].result {
            return Err(format!(
                "{} computed {}, normal computed {}",
                way.name, way.result, ways[0].result
            )
            .into());
        }
    }
    println!("{title}");
    println!(
        "{:<18} {:>7}  {:>36}  {:>13}  {:>9}",
        "way", "workers", "result", "time", "vs normal"
    );
    let base = ways[0].elapsed.as_secs_f64();
    for way in &ways {
        let secs = way.elapsed.as_secs_f64();
        println!(
            "{:<18} {:>7}  {:>36}  {:>10.3} ms  {:>8.2}x",
            way.name,
            way.workers,
            way.result,
            secs * 1000.0,
            base / secs
        );
    }
    Ok(ways)
}

/// What clap's attributes cannot say about the arguments.
fn check(args: &Args) -> Result<(), clap::Error> {
    let invalid =
        |message: String| Args::command().error(clap::error::ErrorKind::ValueValidation, message);
    if args.workers == 0 {
        return Err(invalid("--workers must be at least 1".to_owned()));
    }
    // The sum over all jobs is about workers * n**4 / 4; keep it in a u128.
    if args.workers as f64 * (args.n as f64).powi(4) / 4.0 > 0.9 * u128::MAX as f64 {
        let message = format!(
            "--n {} with {} workers overflows u128",
            args.n, args.workers
        );
        return Err(invalid(message));
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    if let Err(e) = check(&args) {
        e.exit(); // clap's message and usage, exit status 2
    }
    let cpus = mpcore::cpu_count();
    let mut tables = vec![(
        "CPU-bound".to_owned(),
        compare(
            &format!(
                "CPU-bound: {} jobs of `res += i + i**2 + i**3` for i in range({}), on {cpus} CPUs",
                args.workers, args.n
            ),
            Job::Cpu { n: args.n },
            &args,
        )?,
    )];
    if args.io {
        println!();
        let title = format!(
            "I/O-bound: {} jobs of {IO_REQUESTS} requests, each waiting {} ms for its reply",
            args.workers,
            IO_WAIT.as_millis()
        );
        tables.push(("I/O-bound".to_owned(), compare(&title, Job::Io, &args)?));
    }
    if let Some(path) = &args.svg {
        timeline::draw(path, &tables)?;
        println!();
        println!("timeline written to {}", path.display());
    }
    Ok(())
}
