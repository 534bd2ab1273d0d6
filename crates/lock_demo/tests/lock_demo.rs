use std::time::Duration;

/// The numbers printed between the line `after` and the line `before`:
/// one number per line, as in the tutorial's output.
fn numbers(lines: &[&str], after: &str, before: &str) -> Vec<u32> {
    let from = lines.iter().position(|l| *l == after).expect(after) + 1;
    let to = lines.iter().position(|l| *l == before).expect(before);
    lines[from..to]
        .iter()
        .map(|n| {
            n.parse()
                .unwrap_or_else(|_| panic!("{n:?} is not one number"))
        })
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
    assert_eq!(lines[11], "with a lock:");
    let scale = "2 processes x 100000 increments of v.set(v.get() + 1):";

    // Without the lock the order, and even the final value, depend on how
    // the two processes interleave: only the shape is certain.
    let unlocked = numbers(&lines, "without a lock:", "with a lock:");
    assert_eq!(unlocked.len(), 10, "{unlocked:?}");
    assert!(
        unlocked.iter().all(|&n| (1..=20).contains(&n)),
        "{unlocked:?}"
    );

    // With it, one process's five steps run together: one of two orders.
    let locked = numbers(&lines, "with a lock:", scale);
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
