use std::time::Duration;

#[test]
fn prints_the_tutorials_sum_from_two_processes() {
    let run = testkit::run(
        env!("CARGO_BIN_EXE_queue_demo"),
        &[],
        Duration::from_secs(60),
    );
    run.assert_success();
    let lines = run.lines();
    assert_eq!(lines[0], "499667166000", "the tutorial's printed result");
    let halves: Vec<(u64, u32)> = lines[1..]
        .iter()
        .map(|line| {
            let (_, rest) = line.split_once(" = ").unwrap();
            let (res, pid) = rest.split_once(" from pid ").unwrap();
            (res.parse().unwrap(), pid.parse().unwrap())
        })
        .collect();
    assert_eq!(halves.len(), 2);
    assert_eq!(halves[0].0, 249_833_583_000);
    assert_eq!(halves[1].0, 249_833_583_000);
    assert_ne!(halves[0].1, halves[1].1, "two different processes");
}
