//! The Rust side of `just compare`: the interface compare.py relies on (one
//! JSON line per call, `--list`), and clear errors for bad arguments. No
//! time is asserted, only that the figures are there and positive.

use std::time::Duration;

const COMPARE: &str = env!("CARGO_BIN_EXE_compare");
const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn list_names_every_workload() {
    let run = testkit::run(COMPARE, &["--list"], LIMIT);
    run.assert_success();
    let names: Vec<&str> = mpbench::WORKLOADS.iter().map(|w| w.name).collect();
    assert_eq!(run.lines(), names);
}

#[test]
fn one_quick_run_prints_one_json_line_with_its_floor() {
    let run = testkit::run(COMPARE, &["spawn_join", "--quick", "--runs", "1"], LIMIT);
    run.assert_success();
    let lines = run.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let json: serde_json::Value = serde_json::from_str(lines[0]).expect("one JSON object");
    let spawn_join = mpbench::workload("spawn_join").unwrap();
    assert_eq!(json["impl"], "mpcore");
    assert_eq!(json["workload"], "spawn_join");
    assert_eq!(json["ops"], spawn_join.quick_ops);
    assert_eq!(json["runs"], 1);
    assert!(json["median_s"].as_f64().unwrap() > 0.0, "{json}");
    assert!(json["floor_median_s"].as_f64().unwrap() > 0.0, "{json}");
}

#[test]
fn bad_arguments_say_what_is_wrong() {
    let unknown = testkit::run(COMPARE, &["no_such_workload"], LIMIT);
    assert_eq!(unknown.status.code(), Some(2));
    assert_eq!(
        unknown.stderr.trim(),
        "compare: no workload named \"no_such_workload\"; `compare --list` names them."
    );

    let zero = testkit::run(COMPARE, &["spawn_join", "--runs", "0"], LIMIT);
    assert_eq!(zero.status.code(), Some(2));
    assert!(
        zero.stderr
            .contains("invalid value '0' for '--runs <RUNS>'"),
        "{}",
        zero.stderr
    );

    let none = testkit::run(COMPARE, &[], LIMIT);
    assert_eq!(none.status.code(), Some(2));
    assert!(none.stderr.contains("<WORKLOAD>"), "{}", none.stderr);
}
