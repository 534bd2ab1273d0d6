use std::time::Duration;

fn field(line: &str, after: &str) -> u32 {
    line.split(after)
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches(',')
        .parse()
        .unwrap()
}

#[test]
fn prints_the_tutorial_lines_and_who_ran_where() {
    let run = testkit::run(
        env!("CARGO_BIN_EXE_process_demo"),
        &[],
        Duration::from_secs(60),
    );
    run.assert_success();
    let lines = run.lines();
    assert_eq!(
        lines[..6],
        [
            "== the 多进程 tutorial: job(1, 2) in a thread and in a process ==",
            "aaaaa",
            "aaaaa",
            "== the wongwonggoods tutorial: task(1, 2) in a process ==",
            "Task in the Process.",
            "1 2",
        ]
    );
    assert_eq!(lines[6], "== underneath: who ran where ==");
    let main_pid = field(lines[7], "main     pid ");
    let thread_pid = field(lines[8], "thread   pid ");
    let child_pid = field(lines[9], "process  pid ");
    let childs_parent = field(lines[9], "parent ");
    assert_eq!(
        thread_pid, main_pid,
        "a thread runs inside the same process"
    );
    assert_ne!(child_pid, main_pid, "a process is another process");
    assert_eq!(childs_parent, main_pid, "forked by main");
    assert_eq!(lines.len(), 10);
}
