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

/// A start method this build of mpcore does not have is reported in the
/// JSON line, not as a failure, so that compare.py can leave its row out
/// and say why. With a fork server in mpcore the line has figures instead:
/// both are accepted, and each is checked for what it must say.
#[test]
fn a_start_method_row_prints_figures_or_why_it_cannot() {
    let run = testkit::run(
        COMPARE,
        &["spawn_join_forkserver", "--quick", "--runs", "1"],
        LIMIT,
    );
    run.assert_success();
    let lines = run.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let json: serde_json::Value = serde_json::from_str(lines[0]).expect("one JSON object");
    assert_eq!(json["workload"], "spawn_join_forkserver");
    match json.get("unavailable") {
        Some(why) => assert_eq!(
            why,
            "the forkserver start method is not available for a Process yet: \
             use StartMethod::Spawn for a child without the parent's threads and locks"
        ),
        None => {
            assert!(json["median_s"].as_f64().unwrap() > 0.0, "{json}");
            // The floor of this row is mpcore's own fork.
            assert!(json["floor_median_s"].as_f64().unwrap() > 0.0, "{json}");
        }
    }
}

#[test]
fn spawn_and_the_short_pool_run_under_the_compare_binary() {
    for name in ["spawn_join_spawn", "pool_map10"] {
        let run = testkit::run(COMPARE, &[name, "--quick", "--runs", "1"], LIMIT);
        run.assert_success();
        let json: serde_json::Value =
            serde_json::from_str(run.lines()[0]).expect("one JSON object");
        assert_eq!(json["workload"], name);
        assert_eq!(json["ops"], mpbench::workload(name).unwrap().quick_ops);
        assert!(json["median_s"].as_f64().unwrap() > 0.0, "{json}");
    }
}
