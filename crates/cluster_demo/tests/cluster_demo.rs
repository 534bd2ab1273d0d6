//! Runs the binary, as a reader would, with a deadline on every run.
//!
//! The processes talk over TCP on 127.0.0.1 only: `--local` picks free
//! loopback ports, and the test that starts a process by hand writes a
//! loopback hostfile of its own.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cluster_demo");
/// Generous: a run takes about a second, but CI machines can be slow.
const LIMIT: Duration = Duration::from_secs(120);
const SQUARES: &str = "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]";
/// `sum(i + i**2 + i**3 for i in range(1000000))`, as Python prints it.
const CPU_SUM: &str = "249999833333583333000000";

#[test]
fn local_2_gathers_the_results_in_input_order() {
    let run = testkit::run(BIN, &["--local", "2"], LIMIT);
    run.assert_success();
    let lines = run.lines();
    let at = |line: &str| lines.iter().position(|l| *l == line);

    let map = at("== pool.map(job, range(10)) on 2 workers in 2 processes ==")
        .unwrap_or_else(|| panic!("no map heading in {lines:?}"));
    assert_eq!(lines[map + 1], SQUARES);
    let sum = at("== sum(pool.map(cpu_job, range(1000000) cut into 10 ranges)) ==")
        .expect("a sum heading");
    assert_eq!(lines[sum + 1], CPU_SUM);

    // Which worker gets which x is timely's routing (x % workers); what
    // must hold: two workers in two processes with two different pids, and
    // every x ran exactly once.
    let who = at("== who ran what ==").expect("a who-ran-what heading");
    let mut pids = BTreeSet::new();
    let mut xs = Vec::new();
    for (w, line) in lines[who + 1..sum].iter().enumerate() {
        let prefix = format!("worker {w} (process {w}, pid ");
        let (pid, ran) = line
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split_once(") ran x = "))
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        pids.insert(pid.parse::<u32>().unwrap());
        let ran = ran.trim_start_matches('[').trim_end_matches(']');
        xs.extend(ran.split(", ").map(|x| x.parse::<u64>().unwrap()));
    }
    xs.sort();
    assert_eq!(xs, (0..10).collect::<Vec<_>>());
    assert_eq!(pids.len(), 2, "{lines:?}");

    assert!(run.stdout.contains(
        "process 1 of 2: workers [1] did their share; worker 0 in process 0 gathered the results"
    ));
}

#[test]
fn local_uses_only_loopback_addresses_and_removes_its_hostfile() {
    let run = testkit::run(BIN, &["--local", "3"], LIMIT);
    run.assert_success();
    let lines = run.lines();
    let path = lines[0]
        .strip_prefix("== --local 3: hostfile ")
        .and_then(|rest| rest.strip_suffix(" =="))
        .unwrap_or_else(|| panic!("no hostfile line in {lines:?}"));
    let addresses: Vec<SocketAddr> = lines[1..4].iter().map(|l| l.parse().unwrap()).collect();
    for address in &addresses {
        assert_eq!(address.ip(), Ipv4Addr::LOCALHOST);
        assert_ne!(address.port(), 0);
    }
    assert_eq!(
        addresses
            .iter()
            .map(SocketAddr::port)
            .collect::<BTreeSet<_>>()
            .len(),
        3
    );
    assert!(lines[4].starts_with("== process 0 of 3 "), "{lines:?}");
    assert!(!Path::new(path).exists(), "{path} was left behind");
}

#[test]
fn a_killed_peer_fails_the_run_within_bounded_time() {
    // Process 1 sends itself SIGKILL once connected, before the job is done.
    let timeout = 30;
    let started = Instant::now();
    let run = testkit::run(
        BIN,
        &[
            "--local",
            "2",
            "--kill-process",
            "1",
            &format!("--timeout={timeout}"),
        ],
        LIMIT,
    );
    let elapsed = started.elapsed();
    assert!(!run.status.success(), "{run:?}");
    // Process 0 noticed the broken connection itself: well before its deadline.
    assert!(elapsed < Duration::from_secs(timeout), "took {elapsed:?}");
    // Whichever of its network threads notices first says how: reading
    // ("socket closed") or writing ("Broken pipe").
    assert!(
        run.stderr.contains(
            "Error: process 0 lost its connection to process 1 (timely communication error: "
        ),
        "{run:?}"
    );
    assert!(
        run.stderr.contains("Error: --local: process 0 (pid "),
        "{run:?}"
    );
    assert!(
        run.stderr
            .contains(") exited with status 1; process 1 (pid "),
        "{run:?}"
    );
    assert!(
        run.stderr.contains(") was killed by signal SIGKILL"),
        "{run:?}"
    );
    assert!(!run.stdout.contains(SQUARES), "{run:?}");
}

#[test]
fn a_peer_that_never_connects_fails_the_run_at_the_deadline() {
    // Two free loopback ports; only process 0 is started.
    let listeners: Vec<TcpListener> = (0..2)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap())
        .collect();
    let hosts: String = listeners
        .iter()
        .map(|l| format!("{}\n", l.local_addr().unwrap()))
        .collect();
    drop(listeners);
    let hostfile =
        std::env::temp_dir().join(format!("cluster_demo-test-{}.hosts", std::process::id()));
    std::fs::write(&hostfile, &hosts).unwrap();
    assert!(hosts.lines().all(|l| l.starts_with("127.0.0.1:")));

    let started = Instant::now();
    let hostfile_arg = hostfile.to_str().unwrap();
    let run = testkit::run(
        BIN,
        &["-n2", "-p0", "-h", hostfile_arg, "--timeout=2"],
        LIMIT,
    );
    let elapsed = started.elapsed();
    let _ = std::fs::remove_file(&hostfile);

    assert!(!run.status.success(), "{run:?}");
    assert!(elapsed >= Duration::from_secs(2), "took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    assert!(
        run.stderr
            .contains("Error: process 0: no result after 2 s: not every process connected"),
        "{run:?}"
    );
}

#[test]
fn the_launcher_kills_a_stuck_peer() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use std::process::{Command, Stdio};

    // A stopped process neither works nor dies, and keeps its sockets open:
    // its peers see no broken connection, only silence.
    let launcher = Command::new(BIN)
        .args(["--local", "2", "--timeout=2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let launcher_pid = launcher.id();
    // Stop process 1 as soon as it exists, long before the job can end.
    let started = Instant::now();
    let p1 = loop {
        let found = testkit::live_children(launcher_pid)
            .into_iter()
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.split(|&b| b == 0).any(|arg| arg == b"-p1"))
            });
        if let Some(pid) = found {
            break pid;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "process 1 never started"
        );
    };
    kill(Pid::from_raw(p1), Signal::SIGSTOP).unwrap();

    let output = testkit::within(LIMIT, move || launcher.wait_with_output().unwrap());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    // Process 0 gives up at its deadline; about 5 s later (its failure's
    // grace, which is also when the launcher's own deadline falls) the
    // launcher kills process 1.
    assert!(
        stderr.contains("Error: process 0: no result after 2 s"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "process 1 (pid {p1}) was killed by signal SIGKILL: the launcher killed it"
        )),
        "{stderr}"
    );
    assert!(testkit::wait_until_ended(p1, Duration::from_secs(5)));
}
