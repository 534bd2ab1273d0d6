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
use mpcore::{Manager, Pool, StartMethod};

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
    /// Internal: time N forks + joins of mpcore in this fresh run, and
    /// print the seconds (the forkserver row's floor).
    #[arg(long, exclusive = true, hide = true, value_name = "N")]
    fresh_forks: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(n) = args.fresh_forks {
        return match time_forks(n) {
            Ok(seconds) => {
                println!("{seconds}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("compare: --fresh-forks: {e}");
                ExitCode::FAILURE
            }
        };
    }
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

/// Times `n` forks + joins of mpcore (each child returns 42), after one
/// that warms up; the seconds the `n` took.
fn time_forks(n: u64) -> mpcore::Result<f64> {
    mpbench::spawn_join(41)?;
    let start = Instant::now();
    let sum = (0..n).try_fold(0, |acc, _| {
        Ok::<_, mpcore::Error>(acc + mpbench::spawn_join(41)?)
    })?;
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(sum, n * 42, "a workload returned a wrong answer");
    Ok(seconds)
}

/// [`time_forks`] in a fresh run of this program: a process that has never
/// started a fork server, and so has none of its threads or descriptors.
/// Timed in the same program, mpcore's fork would be the fork of a program
/// that has a fork server, which is not what a program that forks pays.
fn fresh_fork_seconds(n: u64) -> mpcore::Result<f64> {
    let failed = |reason: String| mpcore::Error::Io {
        call: "compare --fresh-forks",
        reason,
    };
    let exe = std::env::current_exe().map_err(|e| failed(e.to_string()))?;
    let out = std::process::Command::new(exe)
        .arg("--fresh-forks")
        .arg(n.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        return Err(failed(format!("it ended with {}", out.status)));
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| failed(format!("{e}")))
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
        "pool_map_tiny" | "pool_map_chunk1" | "map_async" | "apply_async_rtt"
    ) {
        Some(Pool::new(2)?)
    } else {
        None
    };
    let pool = || pool.as_ref().expect("a pool workload has a pool");
    // One manager for the manager rows: its start is not what they time.
    let manager = if w.name.starts_with("manager_") {
        Some(Manager::new()?)
    } else {
        None
    };
    let manager = || manager.as_ref().expect("a manager workload has a manager");
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
                // is this row's floor, timed in a fresh run of this program
                // that never started a fork server, as a program that
                // forks and nothing else would be (`fresh_fork_seconds`).
                floors.push(fresh_fork_seconds(n)?);
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
            "map_async" => {
                // The goal is to be no slower than `map` on the same work:
                // that is this row's floor. Each takes a couple of
                // milliseconds, and on a shared machine two runs in a row
                // differ by more than the difference sought: ten pairs per
                // run, so that the medians are of ten times as many.
                let want = mpbench::pool_map_answer(n);
                for _ in 0..10 {
                    median_of(&mut ours, &want, || mpbench::pool_map_async_tiny(pool(), n))?;
                    median_of(&mut floors, &want, || mpbench::pool_map_tiny(pool(), n))?;
                }
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
            "barrier_round" => {
                median_of(&mut ours, &n, || mpbench::barrier_round(n))?;
            }
            "joinable_queue" => {
                let want = mpbench::queue_small_answer(n);
                median_of(&mut ours, &want, || mpbench::joinable_queue(n))?;
            }
            "semaphore_uncontended" => {
                median_of(&mut ours, &n, || mpbench::semaphore_uncontended(n))?;
            }
            "condition_pingpong" => {
                median_of(&mut ours, &n, || mpbench::condition_pingpong(n))?;
                median_of(&mut floors, &n, || floor::fork_pipe_pingpong(n))?;
            }
            "manager_dict" => {
                let d = manager().dict::<String, u64>()?;
                let want = mpbench::manager_dict_answer(n);
                median_of(&mut ours, &want, || mpbench::manager_dict(&d, n))?;
                // Two calls an operation: two round trips of the floor, a
                // bare socket pair of the kind mpcore's channels use.
                median_of(&mut floors, &(2 * n), || floor::fork_socket_pingpong(2 * n))?;
            }
            "manager_update" => {
                median_of(&mut ours, &n, || {
                    mpbench::manager_update(manager(), 8, n / 8)
                })?;
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
