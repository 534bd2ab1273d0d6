use std::time::Duration;

#[test]
fn prints_every_process_once_and_joins_in_order() {
    let run = testkit::run(
        env!("CARGO_BIN_EXE_join_demo"),
        &[],
        Duration::from_secs(60),
    );
    run.assert_success();
    let lines = run.lines();
    assert_eq!(lines.len(), 11, "{lines:?}");

    // The processes print in any order, and the parent's joined lines may
    // fall between them: accept every legal interleaving.
    let mut printed: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("This is"))
        .collect();
    printed.sort();
    let expected: Vec<String> = (0..5).map(|i| format!("This is Process:  {i}")).collect();
    assert_eq!(printed, expected);

    // What is guaranteed: joined in order 0..5, each after its process printed.
    let joined: Vec<(usize, &str)> = lines
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, l)| l.starts_with("joined"))
        .collect();
    let mut pids = Vec::new();
    for (i, &(at, line)) in joined.iter().enumerate() {
        let prefix = format!("joined process {i} (pid ");
        let pid = line
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("line {line:?} is not {prefix}...)"));
        pids.push(pid.parse::<u32>().unwrap());
        let printed_at = lines
            .iter()
            .position(|l| *l == format!("This is Process:  {i}"))
            .unwrap();
        assert!(printed_at < at, "process {i} printed before it was joined");
    }
    assert_eq!(joined.len(), 5);
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 5, "five distinct processes");
    assert_eq!(lines[10], "results in join order: [0, 1, 2, 3, 4]");
}
