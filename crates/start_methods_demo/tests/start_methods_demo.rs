use std::time::Duration;

const DEMO: &str = env!("CARGO_BIN_EXE_start_methods_demo");
const LIMIT: Duration = Duration::from_secs(60);

fn run(args: &[&str]) -> Vec<String> {
    let run = testkit::run(DEMO, args, LIMIT);
    run.assert_success();
    run.lines().into_iter().map(str::to_owned).collect()
}

/// What the demo prints for a method whose child is not a plain fork of
/// the parent (spawn, forkserver): both children finish.
fn finishes(method: &str, why: &str) -> Vec<String> {
    [
        format!("== {method} =="),
        "mutex: a thread of the parent holds COUNTER's lock while the child starts".into(),
        "mutex: the child returned 42".into(),
        format!("mutex: why: {why}"),
        "stdout: a thread of the parent holds the stdout lock while the child starts and prints"
            .into(),
        "  child: I can print; the parent's thread holds only the parent's stdout lock".into(),
        "stdout: the child returned 42".into(),
        format!("stdout: why: {why}"),
    ]
    .into()
}

#[test]
fn under_fork_the_mutex_child_hangs_and_is_killed_and_the_stdout_fork_is_refused() {
    let lines = run(&["fork"]);
    assert_eq!(
        lines,
        [
            "== fork ==",
            "mutex: a thread of the parent holds COUNTER's lock while the child starts",
            "mutex: the child still waited for COUNTER after 1s: \
             the parent gave up and killed it (killed by SIGKILL)",
            "mutex: why: fork copied the lock as it was, held, but not the thread that holds it: \
             no one in the child will ever release it",
            "stdout: a thread of the parent holds the stdout lock while the child starts and prints",
            "stdout: mpcore refused to start the child: could not fork: stdout or stderr stayed \
             locked by another thread for 500ms (a child forked now would hang at its first \
             print); release the lock (a `stdout().lock()` held across this call, say) and try again",
            "stdout: why: a child forked now would get the stdout lock held and hang at its first \
             print; mpcore waited half a second for the lock, then gave up rather than start it",
        ]
    );
}

#[test]
fn under_spawn_both_children_finish() {
    let why = "the child is a fresh run of the program (exec): its locks start free, \
               and it has no thread but its own";
    assert_eq!(run(&["spawn"]), finishes("spawn", why));
}

/// Fails with "the forkserver start method is not available" until mpcore
/// has its fork server: this is the behaviour the chapter shows.
#[test]
fn under_forkserver_both_children_finish() {
    let why = "the child is a fork of the server, which has one thread and took no lock: \
               there was nothing held to copy";
    assert_eq!(run(&["forkserver"]), finishes("forkserver", why));
}

#[test]
fn without_an_argument_it_runs_the_three_methods_in_order() {
    let lines = run(&[]);
    let headers: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|l| l.starts_with("=="))
        .collect();
    assert_eq!(headers, ["== fork ==", "== spawn ==", "== forkserver =="]);
    // Each method's two cases, whatever their outcome.
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("mutex: a thread"))
            .count(),
        3
    );
    let fork = &lines[..lines.iter().position(|l| l == "== spawn ==").unwrap()];
    assert_eq!(fork.len(), 7, "{fork:?}");
}

#[test]
fn an_unknown_method_is_refused_with_the_names_to_use() {
    let run = testkit::run(DEMO, &["vfork"], LIMIT);
    assert_eq!(run.status.code(), Some(2));
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr.trim(),
        "start_methods_demo: no start method \"vfork\"; say fork, spawn or forkserver"
    );
}
