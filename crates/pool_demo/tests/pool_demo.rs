use std::collections::BTreeSet;
use std::time::Duration;

const SQUARES: &str = "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]";

#[test]
fn prints_the_tutorial_results_and_who_ran_what() {
    let run = testkit::run(
        env!("CARGO_BIN_EXE_pool_demo"),
        &[],
        Duration::from_secs(120),
    );
    run.assert_success();
    let lines = run.lines();
    let cpus = mpcore::cpu_count();
    assert_eq!(
        lines[..8],
        [
            format!(
                "== pool = mp.Pool() ({cpus} workers, one per CPU); pool.map(job, range(10)) =="
            )
            .as_str(),
            SQUARES,
            "== pool = mp.Pool(processes=3); pool.map(job, range(10)) ==",
            SQUARES,
            "== res = pool.apply_async(job, (2,)); res.get() ==",
            "4",
            "== multi_res = [pool.apply_async(job, (i,)) for i in range(10)] ==",
            SQUARES,
        ]
    );
    assert_eq!(
        lines[8],
        "== who ran what: pool.map(job_with_pid, range(10)) with processes=3 =="
    );

    // Which worker ran which task varies from run to run; what holds every
    // time: three workers (the first three tasks go out at once, one to
    // each), each task ran exactly once, and none ran in the main process.
    let main_at = lines
        .iter()
        .position(|line| line.starts_with("main   "))
        .expect("the line of the main process");
    let worker_lines = &lines[9..main_at];
    assert_eq!(worker_lines.len(), 3, "{worker_lines:?}");
    let mut pids = BTreeSet::new();
    let mut tasks = Vec::new();
    for line in worker_lines {
        let (pid, xs) = line
            .strip_prefix("worker ")
            .and_then(|rest| rest.split_once(" ran x = "))
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        pids.insert(pid.parse::<u32>().unwrap());
        let xs = xs.trim_start_matches('[').trim_end_matches(']');
        tasks.extend(xs.split(", ").map(|x| x.parse::<u64>().unwrap()));
    }
    tasks.sort();
    assert_eq!(tasks, (0..10).collect::<Vec<_>>());
    let last = lines[main_at];
    let main_pid: u32 = last
        .strip_prefix("main   ")
        .and_then(|rest| rest.strip_suffix(" ran none of them"))
        .unwrap_or_else(|| panic!("unexpected line {last:?}"))
        .parse()
        .unwrap();
    assert_eq!(pids.len(), 3);
    assert!(!pids.contains(&main_pid));

    // The pool's async side: the naps finish, and come, shortest first.
    assert_eq!(
        lines[main_at + 1..],
        [
            "== res = pool.map_async(job, range(10)); res.get() ==",
            SQUARES,
            "== pool.starmap(power, [(2, 10), (3, 2), (10, 3)]) ==",
            "[1024, 9, 1000]",
            "== res = pool.starmap_async(power, [(2, 3), (5, 2)]); res.wait() ==",
            "ready: true, successful: true, get: [8, 25]",
            "== res = pool.apply_async(nap, (300,)); res.successful() ==",
            "error: the task has not finished yet, so it is neither successful nor failed",
            "== as_completed: naps of 500, 100 and 300 ms ==",
            "task 1 slept 100 ms",
            "task 2 slept 300 ms",
            "task 0 slept 500 ms",
        ]
    );
}
