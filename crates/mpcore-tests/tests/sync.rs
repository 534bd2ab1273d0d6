//! `RLock`, `Semaphore` and `Condition` across processes: re-entry and a
//! holder that dies, permits counted under many processes, a bounded
//! semaphore released too often, a permit holder that is killed, no lost
//! wake-up in 10,000 rounds, a waiter that is killed, and each of them
//! handed to a child started by `Spawn` and by `ForkServer`.

#[macro_use]
mod isolate;
#[macro_use]
mod methods;

use std::thread;
use std::time::{Duration, Instant};

use mpcore::process::Builder;
use mpcore::{Condition, Error, Event, Process, RLock, Semaphore, StartMethod, Value};
use testkit::{proc_state, within};

/// Longer than any wait here should take on a busy machine.
const PATIENCE: Duration = Duration::from_secs(30);

/// Waits until every process in `pids` sleeps (state `S`).
fn until_all_asleep(pids: &[i32]) {
    let deadline = Instant::now() + PATIENCE;
    while !pids.iter().all(|&pid| proc_state(pid) == Some('S')) {
        assert!(Instant::now() < deadline, "the waiters never fell asleep");
        thread::sleep(Duration::from_millis(10));
    }
}

isolated! {
    fn an_rlock_is_reentrant_in_its_holder_and_shut_to_other_processes() {
        let lock = RLock::new()?;
        let (twice, once, go_on, done) = (Event::new()?, Event::new()?, Event::new()?, Event::new()?);
        let mut child = Process::spawn({
            let (lock, twice, once, go_on, done) =
                (lock.clone(), twice.clone(), once.clone(), go_on.clone(), done.clone());
            move || -> Result<(u32, u32), String> {
                let run = || -> mpcore::Result<(u32, u32)> {
                let outer = lock.acquire()?;
                let inner = lock.acquire_timeout(Duration::ZERO)?;
                let depth = lock.depth();
                twice.set();
                go_on.wait()?;
                drop(inner);
                let after = lock.depth();
                once.set();
                done.wait()?;
                drop(outer);
                Ok((depth, after))
                };
                run().map_err(|e| e.to_string())
            }
        })?;
        twice.wait_timeout(PATIENCE)?;
        assert!(lock.try_acquire()?.is_none(), "held twice by the child");
        assert_eq!(lock.depth(), 0, "not held by this thread");
        go_on.set();
        once.wait_timeout(PATIENCE)?;
        assert!(lock.try_acquire()?.is_none(), "still held once by the child");
        assert!(lock.acquire_timeout(Duration::from_millis(20)).unwrap_err().is_timeout());
        done.set();
        assert_eq!(child.join_timeout(PATIENCE)??, (2, 1));
        let mine = lock.acquire_timeout(PATIENCE)?;
        assert_eq!(lock.depth(), 1, "the child's outermost guard released it");
        drop(mine);
        Ok(())
    }

    fn a_killed_rlock_holder_gives_the_next_locker_owner_died_then_the_lock_works() {
        let lock = RLock::new()?;
        let held = Event::new()?;
        let mut child = Process::spawn({
            let (lock, held) = (lock.clone(), held.clone());
            move || {
                let _a = lock.acquire().expect("free");
                let _b = lock.acquire().expect("its own");
                held.set();
                thread::sleep(Duration::from_secs(120));
            }
        })?;
        held.wait_timeout(PATIENCE)?;
        child.kill()?;
        assert!(child.join().is_err());
        let e = lock.acquire().unwrap_err();
        assert!(matches!(e, Error::OwnerDied), "{e:?}");
        {
            let _g = lock.acquire()?;
            assert_eq!(lock.depth(), 1, "the dead holder's depth does not carry over");
        }
        let mut other = Process::spawn({
            let lock = lock.clone();
            move || lock.try_acquire().map(|g| g.is_some()).unwrap_or(false)
        })?;
        assert!(other.join_timeout(PATIENCE)?, "one release freed it");
        Ok(())
    }

    fn never_more_holders_than_permits_among_8_processes() {
        const PERMITS: u32 = 3;
        const ROUNDS: u32 = 200;
        let sem = Semaphore::new(PERMITS)?;
        let (inside, most, entries) = (Value::new(0u32)?, Value::new(0u32)?, Value::new(0u32)?);
        let workers: Vec<_> = (0..8)
            .map(|i| {
                let (sem, inside, most, entries) =
                    (sem.clone(), inside.clone(), most.clone(), entries.clone());
                Process::spawn(move || -> Result<(), String> {
                    let run = || -> mpcore::Result<()> {
                    for round in 0..ROUNDS {
                        let permit = if round % 2 == 0 {
                            sem.acquire()?
                        } else {
                            sem.acquire_timeout(PATIENCE)?
                        };
                        let now = {
                            let mut n = inside.lock()?;
                            *n += 1;
                            *n
                        };
                        {
                            let mut m = most.lock()?;
                            *m = (*m).max(now);
                        }
                        *entries.lock()? += 1;
                        if (round + i) % 7 == 0 {
                            thread::sleep(Duration::from_micros(200));
                        } else {
                            thread::yield_now();
                        }
                        *inside.lock()? -= 1;
                        drop(permit);
                    }
                    Ok(())
                    };
                    run().map_err(|e| e.to_string())
                })
            })
            .collect::<mpcore::Result<_>>()?;
        for mut w in workers {
            w.join_timeout(PATIENCE)??;
        }
        let most = most.get()?;
        println!("most holders at once: {most} of {PERMITS} permits");
        assert!((1..=PERMITS).contains(&most), "{most} holders at once");
        assert_eq!(entries.get()?, 8 * ROUNDS);
        assert_eq!(inside.get()?, 0);
        assert_eq!(sem.value(), PERMITS, "every permit came back");
        Ok(())
    }

    fn a_bounded_semaphore_released_too_often_in_a_child_is_an_error() {
        let sem = Semaphore::bounded(2)?;
        let permit = sem.acquire()?;
        permit.forget();
        let mut child = Process::spawn({
            let sem = sem.clone();
            move || -> (bool, String) {
                let first = sem.release().is_ok();
                (first, sem.release().unwrap_err().to_string())
            }
        })?;
        let (first, second) = child.join_timeout(PATIENCE)?;
        assert!(first, "giving back the forgotten permit is fine");
        assert_eq!(
            second,
            "the semaphore was released too many times: its value would go above 2, the most \
             it may count (a bounded semaphore may not go above its start value)"
        );
        assert_eq!(sem.value(), 2);
        Ok(())
    }

    fn a_killed_permit_holder_takes_its_permit_with_it_until_released() {
        let sem = Semaphore::new(1)?;
        let held = Event::new()?;
        let mut holder = Process::spawn({
            let (sem, held) = (sem.clone(), held.clone());
            move || {
                let _permit = sem.acquire().expect("a free permit");
                held.set();
                thread::sleep(Duration::from_secs(120));
            }
        })?;
        held.wait_timeout(PATIENCE)?;
        // A waiter asleep when the holder dies keeps waiting: the permit
        // is lost, as in Python.
        let mut waiter = Process::spawn({
            let sem = sem.clone();
            move || sem.acquire_timeout(PATIENCE).map(|p| p.forget()).is_ok()
        })?;
        until_all_asleep(&[waiter.pid()]);
        holder.kill()?;
        assert!(holder.join().is_err());
        assert_eq!(sem.value(), 0, "the dead holder's permit is lost");
        assert!(sem.acquire_timeout(Duration::from_millis(50)).unwrap_err().is_timeout());
        assert!(waiter.is_alive(), "the waiter still waits");
        // Giving it back by hand lets the waiter in.
        sem.release()?;
        assert!(waiter.join_timeout(PATIENCE)?);
        assert_eq!(sem.value(), 0, "the waiter kept it");
        Ok(())
    }

    fn no_notify_is_lost_in_10000_rounds_between_two_processes() {
        const ROUNDS: u32 = 10_000;
        let cond = Condition::new()?;
        let turn = Value::new(0u32)?;
        // The parent plays the even turns, the child the odd ones; each
        // waits for its turn, with a timeout that only a lost wake-up
        // reaches.
        fn play(cond: &Condition, turn: &Value<u32>, odd: u32) -> mpcore::Result<()> {
            for round in 0..ROUNDS {
                let mine = 2 * round + odd;
                let guard = cond.acquire()?;
                let (guard, ready) = guard.wait_for_timeout(PATIENCE, || {
                    turn.get().is_ok_and(|t| t == mine)
                })?;
                assert!(ready, "turn {mine}: the wake-up was lost");
                turn.set(mine + 1)?;
                guard.notify(1);
            }
            Ok(())
        }
        let mut child = Process::spawn({
            let (cond, turn) = (cond.clone(), turn.clone());
            move || play(&cond, &turn, 1).map_err(|e| e.to_string())
        })?;
        play(&cond, &turn, 0)?;
        child.join_timeout(PATIENCE)??;
        assert_eq!(turn.get()?, 2 * ROUNDS);
        Ok(())
    }

    fn a_notifier_killed_before_it_lets_go_of_the_lock_leaves_no_waiter_asleep() {
        let cond = Condition::new()?;
        let notified = Event::new()?;
        let mut waiter = Process::spawn({
            let cond = cond.clone();
            move || -> String {
                let guard = cond.acquire().expect("the lock");
                match guard.wait_timeout(PATIENCE) {
                    Ok((_, notified)) => format!("woke, notified: {notified}"),
                    Err(e) => e.to_string(),
                }
            }
        })?;
        until_all_asleep(&[waiter.pid()]);
        // The notifier is killed holding the lock, so it never wakes the
        // waiter it picked (that wake-up comes after the release).
        let mut notifier = Process::spawn({
            let (cond, notified) = (cond.clone(), notified.clone());
            move || {
                let guard = cond.acquire().expect("the lock");
                guard.notify_all();
                notified.set();
                thread::sleep(Duration::from_secs(120));
            }
        })?;
        notified.wait_timeout(PATIENCE)?;
        notifier.kill()?;
        assert!(notifier.join().is_err());
        let start = Instant::now();
        let said = waiter.join_timeout(PATIENCE)?;
        assert_eq!(said, Error::OwnerDied.to_string());
        // Within a slice or so, not at the end of its 30 s timeout.
        let took = start.elapsed();
        println!("the waiter saw its signal and the dead holder after {took:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
        Ok(())
    }

    fn a_waiter_killed_while_it_waits_does_not_stop_the_others() {
        let cond = Condition::new()?;
        let go = Value::new(0u32)?;
        let wait_for = |at_least: u32| {
            let (cond, go) = (cond.clone(), go.clone());
            Process::spawn(move || -> bool {
                let guard = cond.acquire().expect("the lock");
                let (_guard, ready) = guard
                    .wait_for_timeout(PATIENCE, || go.get().is_ok_and(|g| g >= at_least))
                    .expect("a wait");
                ready
            })
        };
        let mut victim = wait_for(1)?;
        let mut first = wait_for(1)?;
        let mut second = wait_for(2)?;
        until_all_asleep(&[victim.pid(), first.pid(), second.pid()]);
        victim.kill()?;
        assert!(victim.join().is_err());
        {
            // One notify, one live waiter woken, though the dead one was
            // waiting too.
            let guard = cond.acquire()?;
            go.set(1)?;
            guard.notify(1);
        }
        let deadline = Instant::now() + PATIENCE;
        while first.is_alive() && second.is_alive() {
            assert!(Instant::now() < deadline, "notify(1) woke nobody");
            thread::sleep(Duration::from_millis(5));
        }
        {
            let guard = cond.acquire()?;
            go.set(2)?;
            guard.notify_all();
        }
        assert!(first.join_timeout(PATIENCE)?);
        assert!(second.join_timeout(PATIENCE)?);
        Ok(())
    }
}

/// What a child started by `Spawn` or `ForkServer` does with each type:
/// the RLock's depth when taken twice, a permit kept, and a notify.
fn use_them((lock, sem, cond, flag): (RLock, Semaphore, Condition, Value<u32>)) -> u32 {
    let _outer = lock.acquire().expect("the RLock");
    let _inner = lock.acquire().expect("the RLock again");
    sem.acquire().expect("a permit").forget();
    let guard = cond.acquire().expect("the condition's lock");
    flag.set(1).expect("the flag");
    guard.notify_all();
    lock.depth()
}

under_spawn_and_forkserver! {
    fn each_type_works_in_a_child_started_by_a_fresh_program(method) {
        within(PATIENCE, move || {
            let (lock, sem, cond) = (RLock::new().unwrap(), Semaphore::new(2).unwrap(), Condition::new().unwrap());
            let flag = Value::new(0u32).unwrap();
            let guard = cond.acquire().unwrap();
            let mut child = Builder::new()
                .start_method(method)
                .spawn_fn(use_them, (lock.clone(), sem.clone(), cond.clone(), flag.clone()))
                .unwrap();
            let (guard, ready) = guard
                .wait_for_timeout(PATIENCE, || flag.get().is_ok_and(|f| f == 1))
                .unwrap();
            assert!(ready, "the child's notify came");
            drop(guard);
            assert_eq!(child.join().unwrap(), 2);
            assert_eq!(sem.value(), 1, "the child kept one permit");
            assert_eq!(lock.try_acquire().unwrap().map(|_| ()), Some(()), "and released the RLock");
        });
    }
}

#[test]
fn a_condition_cannot_go_into_a_queue() {
    let q = mpcore::Queue::<Condition>::new().unwrap();
    let e = q.put(Condition::new().unwrap()).unwrap_err();
    assert!(
        e.to_string()
            .contains("a Condition can be sent only in the argument"),
        "{e}"
    );
    let _ = StartMethod::Fork;
}
