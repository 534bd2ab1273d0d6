//! Section 4 of the 多进程 tutorial ("效率对比 threading & multiprocessing"): the same
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
//! tutorial; `4999999666666716666660000000` with `--n 10000000`, the
//! tutorial's ten-times run), the time, and the speed-up over `normal`.
//! `--gil` adds a row where the threads share a simulated GIL that changes
//! hands every 5 ms, as CPython's does; `--io` adds a second table for an
//! I/O-bound job; `--svg` draws each way's timeline, with each turn a
//! thread held the GIL as a slice of its bar.

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use course::job::cpu_job_range;
use mpcore::{Process, Queue};

mod gil;
mod timeline;

use gil::{Gil, Holder, SWITCH_INTERVAL};

/// About 0.22 s per job in release mode on this course's 2-core machine,
/// so that the whole run (2 + 1 + 1 job-times) takes about a second.
const DEFAULT_N: u64 = 200_000_000;

/// The thread that holds the simulated GIL checks after this many loop
/// steps (a few microseconds) whether another thread asked for it, as
/// CPython checks between bytecodes.
const GIL_STEP: u64 = 1000;

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
    /// Add a row where the threads share a simulated GIL, handed over every 5 ms.
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
    fn run(self, mut gil: Option<&mut Holder>) -> u128 {
        match (self, gil.as_deref_mut()) {
            (Job::Cpu { n }, None) => cpu_job_range(0, n),
            (Job::Cpu { n }, Some(gil)) => {
                gil.take();
                let res = (0..n)
                    .step_by(GIL_STEP as usize)
                    .map(|start| {
                        gil.yield_if_asked();
                        cpu_job_range(start, (start + GIL_STEP).min(n))
                    })
                    .sum();
                gil.release();
                res
            }
            (Job::Io, _) => (0..IO_REQUESTS)
                .map(|request| {
                    thread::sleep(IO_WAIT);
                    let start = request * IO_REPLY_WORK;
                    match gil.as_deref_mut() {
                        None => cpu_job_range(start, start + IO_REPLY_WORK),
                        Some(gil) => {
                            gil.take();
                            let res = cpu_job_range(start, start + IO_REPLY_WORK);
                            gil.release();
                            res
                        }
                    }
                })
                .sum(),
        }
    }
}

/// What one worker sends back: its lane, its result, and the slices of
/// time it ran (start, end), in seconds since the way began. A worker runs
/// in one slice, unless it waited for the simulated GIL.
type Report = (usize, u128, Vec<(f64, f64)>);

/// One way's measurement: a table row and a timeline panel.
struct Way {
    name: &'static str,
    workers: usize,
    result: u128,
    elapsed: Duration,
    lanes: Vec<String>,
    /// The slices of time each job ran, in seconds since the way began.
    bars: Vec<Bar>,
}

/// One slice of a job in the timeline.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bar {
    lane: usize,
    /// Which job, counted from 1 across the way.
    job: usize,
    start: f64,
    end: f64,
}

/// The tutorial's `normal()`: every job in this thread, one after another.
fn normal(job: Job, jobs: usize) -> Way {
    let t0 = Instant::now();
    let mut result = 0;
    let mut bars = Vec::new();
    for i in 0..jobs {
        let start = t0.elapsed().as_secs_f64();
        result += job.run(None);
        let end = t0.elapsed().as_secs_f64();
        bars.push(Bar {
            lane: 0,
            job: i + 1,
            start,
            end,
        });
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
/// too). With a switch interval, the threads share a simulated GIL that
/// changes hands at that interval.
fn multithread(job: Job, workers: usize, gil: Option<Duration>) -> Result<Way, Box<dyn Error>> {
    let q = Queue::<Report>::new()?;
    let shared = gil.map(|interval| Arc::new(Gil::new(interval)));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..workers)
        .map(|lane| {
            let (q, shared) = (q.clone(), shared.clone());
            thread::spawn(move || {
                let start = t0.elapsed().as_secs_f64();
                let report = match shared.as_deref() {
                    None => {
                        let res = job.run(None);
                        (lane, res, vec![(start, t0.elapsed().as_secs_f64())])
                    }
                    Some(gil) => {
                        let mut holder = Holder::new(gil, t0);
                        let res = job.run(Some(&mut holder));
                        (lane, res, holder.slices)
                    }
                };
                q.put(report)
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
        if gil.is_some() {
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
            q.put((lane, res, vec![(start, t0.elapsed().as_secs_f64())]))
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
        // One job per lane here.
        bars: reports
            .iter()
            .flat_map(|&(lane, _, ref slices)| {
                slices.iter().map(move |&(start, end)| Bar {
                    lane,
                    job: lane + 1,
                    start,
                    end,
                })
            })
            .collect(),
        lanes,
    }
}

/// Runs every way on `job`, checks that they agree, prints the table.
fn compare(title: &str, job: Job, args: &Args) -> Result<Vec<Way>, Box<dyn Error>> {
    let mut ways = vec![
        normal(job, args.workers),
        multithread(job, args.workers, None)?,
        multicore(job, args.workers)?,
    ];
    if args.gil {
        ways.push(multithread(job, args.workers, Some(SWITCH_INTERVAL))?);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The timeline's GIL row: each thread runs in many slices, the slices
    /// of the two threads never overlap, and the threads take turns. A
    /// short switch interval gives many turns even to a small job; no
    /// time is asserted, only the order of the slices.
    #[test]
    fn under_the_gil_the_threads_take_turns() {
        let n = 2_000_000;
        let way = multithread(Job::Cpu { n }, 2, Some(Duration::from_micros(50))).unwrap();
        assert_eq!(way.result, 2 * course::job::cpu_job(n));
        for lane in 0..2 {
            let slices = way.bars.iter().filter(|b| b.lane == lane).count();
            assert!(slices > 1, "thread {} ran in one slice", lane + 1);
        }
        let mut bars = way.bars.clone();
        bars.sort_by(|a, b| a.start.total_cmp(&b.start));
        for pair in bars.windows(2) {
            assert!(
                pair[0].end <= pair[1].start,
                "two threads held the GIL at once: {pair:?}"
            );
        }
        let turns = bars.windows(2).filter(|p| p[0].lane != p[1].lane).count();
        assert!(turns >= 2, "the threads did not take turns: {bars:?}");
    }

    #[test]
    fn without_the_gil_each_thread_is_one_slice() {
        let way = multithread(Job::Cpu { n: 100_000 }, 2, None).unwrap();
        let lanes: Vec<usize> = way.bars.iter().map(|b| b.lane).collect();
        assert_eq!(lanes, [0, 1]);
    }

    #[test]
    fn the_io_job_takes_the_gil_only_to_handle_each_reply() {
        let way = multithread(Job::Io, 2, Some(SWITCH_INTERVAL)).unwrap();
        // A slice per reply, in each thread.
        for lane in 0..2 {
            let slices = way.bars.iter().filter(|b| b.lane == lane).count();
            assert_eq!(slices, IO_REQUESTS as usize, "thread {}", lane + 1);
        }
    }
}
