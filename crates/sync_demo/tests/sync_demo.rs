use std::collections::BTreeSet;
use std::time::Duration;

#[test]
fn every_section_prints_what_chapter_14_shows() {
    let run = testkit::run(
        env!("CARGO_BIN_EXE_sync_demo"),
        &[],
        Duration::from_secs(120),
    );
    run.assert_success();
    let lines = run.lines();
    println!("{}", run.stdout);
    assert_eq!(lines.len(), 39, "{lines:?}");

    // RLock: each process's line once, in either order, then the total.
    assert_eq!(lines[0], "== RLock ==");
    let holds: BTreeSet<&str> = lines[1..3].iter().copied().collect();
    assert_eq!(
        holds,
        BTreeSet::from([
            "5 deposits of 1 in one hold",
            "5 deposits of 10 in one hold"
        ])
    );
    assert_eq!(lines[3], "balance: 55");

    // Semaphore: never more than 2 inside; 5 workers of 0.1 s in 3 rounds.
    assert_eq!(lines[4], "== Semaphore ==");
    let rest = lines[5]
        .strip_prefix("5 workers, 2 permits: at most 2 inside at once, ")
        .unwrap_or_else(|| panic!("{:?}", lines[5]));
    let secs: f64 = rest.strip_suffix(" s in all").unwrap().parse().unwrap();
    assert!(secs >= 0.3, "{secs} s: more than 2 at once?");
    assert_eq!(
        lines[6],
        "Semaphore::bounded(2).release(): the semaphore was released too many times: its \
         value would go above 2, the most it may count (a bounded semaphore may not go above \
         its start value)"
    );
    assert_eq!(lines[7], "a permit holder was killed: 1 of 2 permits free");
    assert_eq!(lines[8], "after sem.release(): 2 of 2 permits free");

    // Condition: each item made, then taken by one consumer; each
    // consumer takes one.
    assert_eq!(lines[9], "== Condition ==");
    let mut takers = BTreeSet::new();
    for n in 1..=3 {
        let made = lines[10 + 2 * (n - 1)];
        let taken = lines[11 + 2 * (n - 1)];
        assert_eq!(made, format!("producer made item {n}"));
        let who = taken
            .strip_prefix("consumer ")
            .and_then(|t| t.strip_suffix(&format!(" took item {n}")))
            .unwrap_or_else(|| panic!("{taken:?}"));
        takers.insert(who.to_owned());
    }
    assert_eq!(takers, BTreeSet::from(["0", "1", "2"].map(String::from)));

    // Barrier: in each phase all three finish (in any order, if a
    // process starts late), then one of them says so; then the killed
    // party breaks the barrier, and reset mends it.
    assert_eq!(lines[16], "== Barrier ==");
    for phase in 1..=3 {
        let at = 17 + 4 * (phase - 1);
        let finished: BTreeSet<&str> = lines[at..at + 3].iter().copied().collect();
        let expected: BTreeSet<String> = ["a", "b", "c"]
            .map(|name| format!("{name} finished phase {phase}"))
            .into();
        assert_eq!(
            finished,
            expected.iter().map(String::as_str).collect(),
            "phase {phase}"
        );
        assert_eq!(
            lines[at + 3],
            format!("-- all three finished phase {phase}")
        );
    }
    assert_eq!(
        lines[29],
        "the other party was killed: the barrier is broken"
    );
    assert_eq!(lines[30], "after reset, is_broken = false");

    // JoinableQueue: each of the six jobs done once, by w1 or w2, and
    // only then the producer's join returns.
    assert_eq!(lines[31], "== JoinableQueue ==");
    let mut jobs = BTreeSet::new();
    for line in &lines[32..38] {
        let (who, job) = line
            .split_once(" did job ")
            .unwrap_or_else(|| panic!("{line:?}"));
        assert!(who == "w1" || who == "w2", "{line:?}");
        assert!(jobs.insert(job.parse::<u32>().unwrap()), "twice: {line:?}");
    }
    assert_eq!(jobs, (0..6).collect());
    assert_eq!(lines[38], "all 6 jobs done");
}
