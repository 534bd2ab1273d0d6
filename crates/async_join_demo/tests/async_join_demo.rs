use std::time::Duration;

const DEMO: &str = env!("CARGO_BIN_EXE_async_join_demo");

#[test]
fn the_demo_prints_who_runs_and_awaits_a_thousand_children_on_few_threads() {
    let run = testkit::run(DEMO, &[], Duration::from_secs(120));
    run.assert_success();
    let lines = run.lines();
    let (threads_line, lines) = lines.split_last().expect("the demo printed");
    assert_eq!(
        lines,
        [
            "main: MainProcess, started by none; no parent",
            "child: fork-child, started by fork; parent MainProcess, alive: true",
            "child: spawn-child, started by spawn; parent MainProcess, alive: true",
            "child: forkserver-child, started by forkserver; parent MainProcess, alive: true",
            "active child: waiter-1",
            "active child: waiter-2",
            "active child: waiter-3",
            "quick was reaped: exit code Some(0)",
            "active children after the joins: 0",
            "interrupted: SIGINT; exit code Some(-2)",
            "awaited 1000 children from one task: the sum of their squares is 332833500",
        ]
    );
    let threads: usize = threads_line
        .strip_prefix("threads in this process while they were awaited: ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected last line: {threads_line}"));
    assert!((1..10).contains(&threads), "{threads} threads");
}
