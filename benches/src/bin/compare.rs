//! Times one workload of the side-by-side table in mpcore, and its floor,
//! and prints one JSON line. `benches/python/compare.py` (`just compare`)
//! runs it alternately with the Python workloads and prints the table.
//!
//! ```text
//! cargo run --release -p mpbench --bin compare -- spawn_join --runs 5
//! {"floor_median_s":0.0128,"impl":"mpcore","median_s":0.0141,"ops":200,"runs":5,"workload":"spawn_join"}
//! ```
//!
//! Each run does the whole workload (e.g. 200 spawns); the median over
//! `--runs` runs is printed, mpcore's and the floor's runs alternating. The
//! answer of every run is checked after its timer stops.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use course::floor;
use mpbench::{MIB, Workload};
use mpcore::{Pool, StartMethod};

/// Times one workload in mpcore and its floor; prints one JSON line.
#[derive(Parser)]
#[command(name = "compare")]
struct Args {
    /// The workload to time (`--list` names them).
    #[arg(required_unless_present = "list")]
    workload: Option<String>,
    /// How many runs to take the median of.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
    /// The workload's small size, to check that it runs.
    #[arg(long)]
    quick: bool,
    /// Print the workloads' names, one a line, and nothing else.
    #[arg(long, exclusive = true)]
    list: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        for w in mpbench::WORKLOADS {
            println!("{}", w.name);
        }
        return ExitCode::SUCCESS;
    }
    let name = args
        .workload
        .expect("clap requires a workload without --list");
    let Some(workload) = mpbench::workload(&name) else {
        eprintln!("compare: no workload named {name:?}; `compare --list` names them.");
        return ExitCode::from(2);
    };
    let runs = args.runs as usize;
    match measure(workload, args.quick, runs) {
        Ok((ops, median, floor)) => {
            let line = serde_json::json!({
                "impl": "mpcore",
                "workload": workload.name,
                "ops": ops,
                "runs": runs,
                "median_s": median,
                "floor_median_s": floor,
            });
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("compare: {}: {e}", workload.name);
            ExitCode::FAILURE
        }
    }
}

fn median_of<A: PartialEq + std::fmt::Debug>(
    times: &mut Vec<f64>,
    want: &A,
    mut f: impl FnMut() -> mpcore::Result<A>,
) -> mpcore::Result<()> {
    let start = Instant::now();
    let got = f()?;
    times.push(start.elapsed().as_secs_f64());
    assert_eq!(&got, want, "a workload returned a wrong answer");
    Ok(())
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    let n = times.len();
    if n % 2 == 1 {
        times[n / 2]
    } else {
        (times[n / 2 - 1] + times[n / 2]) / 2.0
    }
}

/// Times `runs` runs of the workload (and of its floor, alternating);
/// returns the operations per run and the medians in seconds.
fn measure(w: &Workload, quick: bool, runs: usize) -> mpcore::Result<(u64, f64, Option<f64>)> {
    let n = if quick { w.quick_ops } else { w.ops };
    let (mut ours, mut floors) = (Vec::new(), Vec::new());
    // One pool for the workloads that time its tasks; pool_map10 times a
    // pool's whole life, and starts its own.
    let pool = if matches!(
        w.name,
        "pool_map_tiny" | "pool_map_chunk1" | "apply_async_rtt"
    ) {
        Some(Pool::new(2)?)
    } else {
        None
    };
    let pool = || pool.as_ref().expect("a pool workload has a pool");
    for _ in 0..runs {
        match w.name {
            "spawn_join" => {
                median_of(&mut ours, &(n * 42), || {
                    (0..n).try_fold(0, |acc, _| Ok(acc + mpbench::spawn_join(41)?))
                })?;
                median_of(&mut floors, &(n * 42), || {
                    (0..n).try_fold(0, |acc, _| Ok(acc + floor::fork_pipe_waitpid(41)?))
                })?;
            }
            "spawn_join_spawn" => {
                median_of(&mut ours, &(n * 42), || {
                    (0..n).try_fold(0, |acc, _| {
                        Ok(acc + mpbench::spawn_join_with(StartMethod::Spawn, 41)?)
                    })
                })?;
            }
            "spawn_join_forkserver" => {
                median_of(&mut ours, &(n * 42), || {
                    (0..n).try_fold(0, |acc, _| {
                        Ok(acc + mpbench::spawn_join_with(StartMethod::ForkServer, 41)?)
                    })
                })?;
                // The goal is to stay within 2x of mpcore's own fork: that
                // is this row's floor.
                median_of(&mut floors, &(n * 42), || {
                    (0..n).try_fold(0, |acc, _| Ok(acc + mpbench::spawn_join(41)?))
                })?;
            }
            "pool_map10" => {
                // The program's default start method, fork unless set.
                median_of(&mut ours, &(n * 90), || {
                    (0..n).try_fold(0, |acc, _| Ok(acc + mpbench::pool_map10(Pool::new(2)?)?))
                })?;
            }
            "queue_small" => {
                let want = mpbench::queue_small_answer(n);
                median_of(&mut ours, &want, || mpbench::queue_small(n))?;
                let bytes = n as usize * 8;
                median_of(&mut floors, &bytes, || {
                    floor::fork_pipe_stream(n as usize, 8)
                })?;
            }
            "queue_1mib" => {
                let want = n * MIB as u64;
                median_of(&mut ours, &want, || mpbench::queue_1mib(n))?;
                median_of(&mut floors, &(want as usize), || {
                    floor::fork_pipe_stream(n as usize, MIB)
                })?;
            }
            "pool_map_tiny" => {
                let want = mpbench::pool_map_answer(n);
                median_of(&mut ours, &want, || mpbench::pool_map_tiny(pool(), n))?;
            }
            "pool_map_chunk1" => {
                let want = mpbench::pool_map_answer(n);
                median_of(&mut ours, &want, || mpbench::pool_map_chunk1(pool(), n))?;
            }
            "apply_async_rtt" => {
                let want = mpbench::pool_map_answer(n);
                median_of(&mut ours, &want, || mpbench::apply_async_rtt(pool(), n))?;
                median_of(&mut floors, &n, || floor::fork_pipe_pingpong(n))?;
            }
            "value_incr" => {
                let want = n as i64;
                median_of(&mut ours, &want, || mpbench::value_incr(2, n / 2))?;
                median_of(&mut floors, &n, || {
                    floor::shared_atomic_increments(2, n / 2)
                })?;
            }
            "event_wake" => {
                median_of(&mut ours, &n, || mpbench::event_wake(n))?;
                median_of(&mut floors, &n, || floor::fork_pipe_pingpong(n))?;
            }
            "timing_normal" => {
                let want = 2 * course::job::cpu_job(n);
                median_of(&mut ours, &want, || Ok(mpbench::timing_normal(n)))?;
            }
            "timing_threads" => {
                let want = 2 * course::job::cpu_job(n);
                median_of(&mut ours, &want, || Ok(mpbench::timing_threads(n)))?;
            }
            "timing_processes" => {
                let want = 2 * course::job::cpu_job(n);
                median_of(&mut ours, &want, || mpbench::timing_processes(n))?;
            }
            "pipe_rtt" => {
                let want = mpbench::queue_small_answer(n);
                median_of(&mut ours, &want, || mpbench::pipe_rtt(n))?;
                median_of(&mut floors, &want, || mpbench::socketpair_rtt(n))?;
            }
            "pipe_1mib" => {
                // The floor is mpcore's own Queue of 1 MiB byte messages:
                // the goal is to be at least as fast.
                let want = n * MIB as u64;
                median_of(&mut ours, &want, || mpbench::pipe_1mib(n))?;
                median_of(&mut floors, &want, || mpbench::queue_1mib(n))?;
            }
            "listener_rtt" => {
                let want = mpbench::queue_small_answer(n);
                median_of(&mut ours, &want, || mpbench::listener_rtt(n))?;
            }
            other => unreachable!("workload {other} is listed but not measured"),
        }
    }
    let floor = (!floors.is_empty()).then(|| median(floors));
    Ok((n, median(ours), floor))
}
