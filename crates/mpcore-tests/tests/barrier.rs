//! `Barrier` across processes and threads: every round lets all its
//! parties through together, with the arrival indices a permutation and
//! one leader; a timeout, `abort` and a party killed while it waits each
//! break it for the others; `reset` makes it usable again. Under every
//! start method (the barrier travels to spawn and forkserver children as
//! a descriptor).

use std::time::{Duration, Instant};

use mpcore::process::Builder;
use mpcore::{Array, Barrier, Error, Process, StartMethod};
use testkit::within;

#[macro_use]
mod methods;

const LIMIT: Duration = Duration::from_secs(60);
/// Far longer than any round takes, far shorter than `LIMIT`.
const PATIENCE: Duration = Duration::from_secs(20);

/// One party: before round `r` it writes `r` into its cell of `phases`,
/// waits, and then checks that every party has reached round `r` (nobody
/// passed early). Returns each round's (index, is_leader).
fn party((barrier, phases, me, rounds): (Barrier, Array<u32>, usize, u32)) -> Vec<(u64, bool)> {
    let mut seen = Vec::new();
    for round in 1..=rounds {
        phases.set(me, round).unwrap();
        let r = barrier.wait_timeout(PATIENCE).unwrap();
        for other in 0..phases.len() {
            let theirs = phases.get(other).unwrap();
            assert!(
                theirs >= round,
                "party {other} was at round {theirs} when {me} passed {round}"
            );
        }
        seen.push((r.index as u64, r.is_leader));
    }
    seen
}

/// Checks that in every round the indices are a permutation of
/// `0..parties` and exactly the last to arrive is the leader.
fn check_rounds(all: &[Vec<(u64, bool)>], rounds: usize) {
    let parties = all.len();
    for round in 0..rounds {
        let mut indices: Vec<u64> = all.iter().map(|seen| seen[round].0).collect();
        indices.sort_unstable();
        assert_eq!(
            indices,
            (0..parties as u64).collect::<Vec<_>>(),
            "round {round}"
        );
        let leaders: Vec<u64> = all
            .iter()
            .filter(|seen| seen[round].1)
            .map(|seen| seen[round].0)
            .collect();
        assert_eq!(
            leaders,
            [parties as u64 - 1],
            "round {round}: one leader, the last"
        );
    }
}

/// Waits until `n` parties wait at `barrier`.
fn until_waiting(barrier: &Barrier, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    while barrier.n_waiting() != n {
        assert!(Instant::now() < deadline, "{n} parties never waited");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_long(barrier: Barrier) -> Result<u64, String> {
    barrier
        .wait_timeout(PATIENCE)
        .map(|r| r.index as u64)
        .map_err(|e| e.to_string())
}

fn wait_for_ever(barrier: Barrier) -> Result<u64, String> {
    barrier
        .wait()
        .map(|r| r.index as u64)
        .map_err(|e| e.to_string())
}

fn broken() -> Result<u64, String> {
    Err(Error::BrokenBarrier.to_string())
}

/// After a break and a `reset`, a round of `parties` processes started by
/// `method` passes.
fn passes_a_round(barrier: &Barrier, method: StartMethod) {
    assert!(!barrier.is_broken());
    let children: Vec<_> = (1..barrier.parties())
        .map(|_| {
            Builder::new()
                .start_method(method)
                .spawn_fn(wait_long, barrier.clone())
                .unwrap()
        })
        .collect();
    let mine = barrier.wait_timeout(PATIENCE).unwrap().index as u64;
    let mut indices = vec![mine];
    for mut child in children {
        indices.push(child.join().unwrap().unwrap());
    }
    indices.sort_unstable();
    assert_eq!(indices, (0..barrier.parties() as u64).collect::<Vec<_>>());
}

under_every_method! {
    fn four_processes_pass_six_rounds_together(method) {
        within(LIMIT, move || {
            const PARTIES: usize = 4;
            const ROUNDS: u32 = 6;
            let barrier = Barrier::new(PARTIES).unwrap();
            let phases = Array::new(&[0u32; PARTIES]).unwrap();
            let children: Vec<_> = (0..PARTIES)
                .map(|me| {
                    Builder::new()
                        .start_method(method)
                        .spawn_fn(party, (barrier.clone(), phases.clone(), me, ROUNDS))
                        .unwrap()
                })
                .collect();
            let all: Vec<_> = children.into_iter().map(|mut c| c.join().unwrap()).collect();
            check_rounds(&all, ROUNDS as usize);
            assert_eq!(barrier.n_waiting(), 0);
            assert!(!barrier.is_broken());
        });
    }

    fn a_timeout_breaks_the_barrier_for_the_waiting_children(method) {
        within(LIMIT, move || {
            let barrier = Barrier::new(3).unwrap();
            let mut child = Builder::new()
                .start_method(method)
                .spawn_fn(wait_long, barrier.clone())
                .unwrap();
            until_waiting(&barrier, 1);
            let started = Instant::now();
            let e = barrier.wait_timeout(Duration::from_millis(100)).unwrap_err();
            assert!(matches!(e, Error::Timeout(d) if d == Duration::from_millis(100)), "{e}");
            assert!(started.elapsed() >= Duration::from_millis(100));
            assert_eq!(child.join().unwrap(), broken());
            assert!(barrier.is_broken());
            assert_eq!(barrier.n_waiting(), 0);
            assert!(matches!(barrier.wait(), Err(Error::BrokenBarrier)), "broken until reset");
            barrier.reset().unwrap();
            passes_a_round(&barrier, method);
        });
    }

    fn abort_breaks_the_barrier_for_the_waiting_children(method) {
        within(LIMIT, move || {
            let barrier = Barrier::new(3).unwrap();
            let children: Vec<_> = [wait_long as fn(Barrier) -> _, wait_for_ever]
                .into_iter()
                .map(|f| Builder::new().start_method(method).spawn_fn(f, barrier.clone()).unwrap())
                .collect();
            until_waiting(&barrier, 2);
            barrier.abort().unwrap();
            for mut child in children {
                assert_eq!(child.join().unwrap(), broken());
            }
            assert!(barrier.is_broken());
            assert!(matches!(barrier.wait_timeout(PATIENCE), Err(Error::BrokenBarrier)));
            barrier.reset().unwrap();
            passes_a_round(&barrier, method);
        });
    }

    fn a_party_killed_while_it_waits_breaks_the_barrier(method) {
        within(LIMIT, move || {
            let barrier = Barrier::new(4).unwrap();
            let mut survivor = Builder::new()
                .start_method(method)
                .spawn_fn(wait_for_ever, barrier.clone())
                .unwrap();
            let mut victim = Builder::new()
                .start_method(method)
                .spawn_fn(wait_for_ever, barrier.clone())
                .unwrap();
            until_waiting(&barrier, 2);
            let killed = Instant::now();
            victim.kill().unwrap();
            assert_eq!(victim.join().unwrap_err().signal(), Some(mpcore::Signal::SIGKILL));
            // The parent waits too, for ever but for the break.
            assert!(matches!(barrier.wait(), Err(Error::BrokenBarrier)));
            assert_eq!(survivor.join().unwrap(), broken());
            let took = killed.elapsed();
            assert!(took < Duration::from_secs(5), "the break took {took:?}");
            assert!(barrier.is_broken());
            barrier.reset().unwrap();
            passes_a_round(&barrier, method);
        });
    }
}

#[test]
fn the_last_arrival_breaks_a_round_whose_other_party_was_killed_waiting() {
    within(LIMIT, || {
        let barrier = Barrier::new(2).unwrap();
        let mut victim = Process::spawn({
            let barrier = barrier.clone();
            move || barrier.wait().is_ok()
        })
        .unwrap();
        until_waiting(&barrier, 1);
        victim.kill().unwrap();
        assert!(victim.join().is_err());
        // The dead party arrived, but the round must not pass: the next
        // round would wait for it for ever.
        assert!(matches!(barrier.wait(), Err(Error::BrokenBarrier)));
        barrier.reset().unwrap();
        passes_a_round(&barrier, StartMethod::Fork);
    });
}

#[test]
fn a_barrier_of_no_party_is_an_error_and_one_of_one_never_waits() {
    let e = Barrier::new(0).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    assert_eq!(
        e.to_string(),
        "invalid argument: a barrier needs at least one party to wait for"
    );
    let one = Barrier::new(1).unwrap();
    for _ in 0..3 {
        let r = one.wait_timeout(Duration::ZERO).unwrap();
        assert_eq!((r.index, r.is_leader), (0, true));
    }
    assert_eq!(one.parties(), 1);
}

#[test]
fn a_zero_timeout_that_is_not_the_last_arrival_breaks_the_barrier() {
    let barrier = Barrier::new(2).unwrap();
    assert!(
        barrier
            .wait_timeout(Duration::ZERO)
            .unwrap_err()
            .is_timeout()
    );
    assert!(barrier.is_broken());
    let e = barrier.wait().unwrap_err();
    assert_eq!(
        e.to_string(),
        "the barrier is broken (a wait timed out, a waiting party died, or abort or reset was \
         called); reset() makes it usable again"
    );
    barrier.reset().unwrap();
    assert!(!barrier.is_broken());
}

#[test]
fn reset_with_a_party_waiting_breaks_its_round_and_leaves_the_barrier_whole() {
    within(LIMIT, || {
        let barrier = Barrier::new(2).unwrap();
        let waiter = std::thread::spawn({
            let barrier = barrier.clone();
            move || barrier.wait_timeout(PATIENCE)
        });
        until_waiting(&barrier, 1);
        barrier.reset().unwrap();
        assert!(matches!(waiter.join().unwrap(), Err(Error::BrokenBarrier)));
        assert!(!barrier.is_broken(), "reset leaves it whole");
        // A timeout past the end of time waits as `wait` does.
        let other = std::thread::spawn({
            let barrier = barrier.clone();
            move || barrier.wait_timeout(Duration::MAX).map(|r| r.index)
        });
        let mine = barrier.wait_timeout(PATIENCE).unwrap().index;
        assert_eq!(mine + other.join().unwrap().unwrap(), 1);
    });
}

#[test]
fn three_threads_pass_two_thousand_rounds_without_mixing_them() {
    // Fast parties go on to the next round while slow ones still leave
    // the last: the rounds' indices stay permutations all the same.
    within(LIMIT, || {
        const PARTIES: usize = 3;
        const ROUNDS: usize = 2000;
        let barrier = Barrier::new(PARTIES).unwrap();
        let threads: Vec<_> = (0..PARTIES)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    (0..ROUNDS)
                        .map(|_| {
                            let r = barrier.wait_timeout(PATIENCE).unwrap();
                            (r.index as u64, r.is_leader)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        check_rounds(&all, ROUNDS);
    });
}

#[test]
fn a_barrier_in_a_forked_child_and_its_parent_is_one_barrier() {
    within(LIMIT, || {
        let barrier = Barrier::new(2).unwrap();
        let mut child = Process::spawn({
            let barrier = barrier.clone();
            move || {
                (0..100)
                    .map(|_| barrier.wait_timeout(PATIENCE).unwrap().index)
                    .sum::<usize>()
            }
        })
        .unwrap();
        let mine: usize = (0..100)
            .map(|_| barrier.wait_timeout(PATIENCE).unwrap().index)
            .sum();
        assert_eq!(
            mine + child.join().unwrap(),
            100,
            "one of the two is index 1 each round"
        );
    });
}
