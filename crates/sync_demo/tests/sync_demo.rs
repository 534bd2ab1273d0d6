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
    assert_eq!(lines.len(), 16, "{lines:?}");

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
}
