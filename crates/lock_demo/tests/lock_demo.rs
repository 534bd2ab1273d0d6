use std::time::Duration;

fn numbers(line: &str) -> Vec<u32> {
    line.split_whitespace()
        .map(|n| n.parse().expect("a number"))
        .collect()
}

/// The total printed after `label:`, e.g. `with a lock: 200000 (0 updates lost)`.
fn total(lines: &[&str], label: &str) -> u32 {
    let line = lines
        .iter()
        .rev()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no line for {label}"));
    let (_, rest) = line.split_once(": ").unwrap();
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn the_lock_keeps_each_processs_steps_together() {
    let run = testkit::run(
        env!("CARGO_BIN_EXE_lock_demo"),
        &[],
        Duration::from_secs(60),
    );
    run.assert_success();
    let lines = run.lines();
    assert_eq!(lines[0], "without a lock:");
    assert_eq!(lines[2], "with a lock:");

    // Without the lock the order, and even the final value, depend on how
    // the two processes interleave: only the shape is certain.
    let unlocked = numbers(lines[1]);
    assert_eq!(unlocked.len(), 10, "{}", lines[1]);
    assert!(
        unlocked.iter().all(|&n| (1..=20).contains(&n)),
        "{}",
        lines[1]
    );

    // With it, one process's five steps run together: one of two orders.
    let locked = numbers(lines[3]);
    assert!(
        locked == [1, 2, 3, 4, 5, 8, 11, 14, 17, 20]
            || locked == [3, 6, 9, 12, 15, 16, 17, 18, 19, 20],
        "{locked:?}"
    );

    // At scale: nothing lost with the lock; without it, nothing invented.
    assert_eq!(total(&lines, "with a lock"), 200_000);
    assert!(total(&lines, "without a lock") <= 200_000);
    println!("{}", run.stdout);
}
