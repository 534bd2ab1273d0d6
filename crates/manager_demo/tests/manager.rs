use std::time::Duration;

/// The number before ` (` and the number of updates lost in a count line:
/// `8 processes x 10000 update_with: 80000 (0 updates lost)`.
fn count(line: &str, prefix: &str) -> (u64, u64) {
    let rest = line
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{line:?} does not start with {prefix:?}"));
    let (hits, lost) = rest.split_once(" (").expect("a count, then what was lost");
    let lost = lost
        .strip_suffix(" updates lost)")
        .expect("the updates lost");
    (hits.parse().unwrap(), lost.parse().unwrap())
}

/// A figure in microseconds: digits and one point.
fn micros(figure: &str) -> f64 {
    let n = figure.strip_suffix(" µs").expect("a figure in µs");
    n.parse()
        .unwrap_or_else(|_| panic!("{n:?} is not a number"))
}

#[test]
fn the_demo_prints_what_chapter_15_shows() {
    let run = testkit::run(
        env!("CARGO_BIN_EXE_manager_demo"),
        &[],
        Duration::from_secs(240),
    );
    run.assert_success();
    let lines = run.lines();
    assert_eq!(lines.len(), 11, "{}", run.stdout);
    assert_eq!(
        lines[..7],
        [
            "a child filled the dict:",
            r#"  "k0": 0"#,
            r#"  "k1": 1"#,
            r#"  "k2": 4"#,
            r#"  "k3": 9"#,
            r#"  "k4": 16"#,
            "and reversed the list: [4, 3, 2, 1, 0]",
        ]
    );
    let lines = &lines[5..];
    // The Python way loses updates (how many depends on the machine), and
    // never invents one.
    let (hits, lost) = count(lines[2], "8 processes x 10000 get-then-set: ");
    assert_eq!(hits + lost, 80_000);
    assert!(
        hits >= 10_000,
        "each worker's own increments are at least there"
    );
    assert_eq!(
        count(lines[3], "8 processes x 10000 update_with: "),
        (80_000, 0)
    );
    let (call, locked) = lines[4]
        .strip_prefix("one proxy call (dict get): ")
        .and_then(|rest| rest.split_once("; one Value increment under its lock: "))
        .unwrap_or_else(|| panic!("{:?}", lines[4]));
    let (call, locked) = (micros(call), micros(locked));
    assert!(call > 0.0 && locked > 0.0);
    assert!(
        call > locked,
        "a round trip to another process costs more than a lock"
    );
    assert_eq!(
        lines[5],
        "after the manager is killed: the manager's server process is gone (its Manager was \
         dropped, the process that started it ended, or it was killed), so the objects it held \
         are lost"
    );
}
