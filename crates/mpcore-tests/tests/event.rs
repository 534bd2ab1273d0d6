//! `Event` across processes: waiters wake when it is set, timeouts mean
//! what they say, and a waiter that is killed leaves nothing behind.

#[macro_use]
mod isolate;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use mpcore::process::Builder;
use mpcore::{Error, Event, Process};
use testkit::proc_state;

use isolate::TestResult;

fn times_out_after(d: Duration) -> TestResult {
    let e = Event::new()?;
    let start = Instant::now();
    let result = e.wait_timeout(d);
    let elapsed = start.elapsed();
    assert!(
        matches!(result, Err(Error::Timeout(t)) if t == d),
        "{result:?}"
    );
    assert!(elapsed >= d, "gave up after {elapsed:?}, before {d:?}");
    println!("wait_timeout({d:?}) on an unset event: timed out after {elapsed:?}");
    Ok(())
}

/// How long a waiter of the pulse test waits before it gives up: far
/// longer than a wake-up takes, far shorter than the isolation limit.
const PATIENCE: Duration = Duration::from_secs(20);

/// Waits, with `wait` or with `wait_timeout`, and says whether that
/// returned `Ok`.
fn wait_once(e: &Event, timed: bool) -> bool {
    if timed {
        e.wait_timeout(PATIENCE).is_ok()
    } else {
        e.wait().is_ok()
    }
}

/// Waits until every thread or process in `ids` sleeps (state `S`): the
/// waiters have nothing else to sleep on but the event.
fn until_all_asleep(ids: &[i32]) {
    let deadline = Instant::now() + PATIENCE;
    while !ids.iter().all(|&id| proc_state(id) == Some('S')) {
        assert!(Instant::now() < deadline, "the waiters never fell asleep");
        thread::sleep(Duration::from_millis(10));
    }
}

isolated! {
    fn a_set_then_an_immediate_clear_wakes_every_waiter() {
        // Python's Event wakes whoever was waiting when it was set, even if
        // it is cleared before they look; so must ours.
        const PER_KIND: usize = 5;
        let e = Event::new()?;
        let go = Event::new()?;
        // The pulse comes from another process: set, then clear at once.
        let mut pulser = Process::spawn({
            let (e, go) = (e.clone(), go.clone());
            move || {
                let ready = go.wait().is_ok();
                e.set();
                e.clear();
                ready
            }
        })?;
        let mut ids = Vec::new();
        // Waiters in processes, half with wait and half with wait_timeout.
        // Daemons: should one never wake, dropping it kills it.
        let mut processes = Vec::new();
        for i in 0..2 * PER_KIND {
            let e = e.clone();
            let p = Builder::new().daemon(true).spawn(move || wait_once(&e, i % 2 == 0))?;
            ids.push(p.pid());
            processes.push(p);
        }
        // And in threads of this process.
        let (woke_tx, woke) = mpsc::channel();
        let (tid_tx, tids) = mpsc::channel();
        for i in 0..2 * PER_KIND {
            let (e, woke_tx, tid_tx) = (e.clone(), woke_tx.clone(), tid_tx.clone());
            thread::spawn(move || {
                tid_tx.send(nix::unistd::gettid().as_raw()).unwrap();
                let _ = woke_tx.send(wait_once(&e, i % 2 == 0));
            });
        }
        ids.extend(tids.iter().take(2 * PER_KIND));
        until_all_asleep(&ids);

        go.set();
        assert!(pulser.join()?, "the pulser set and cleared the event");
        assert!(!e.is_set(), "cleared again");
        for p in &mut processes {
            assert!(p.join_timeout(PATIENCE)?, "process {} woke with Ok", p.pid());
        }
        for _ in 0..2 * PER_KIND {
            assert!(woke.recv_timeout(PATIENCE)?, "a thread woke with Ok");
        }
        Ok(())
    }

    fn a_wait_that_starts_after_the_pulse_still_waits() {
        // The pulse ends the waits under way, not later ones.
        let e = Event::new()?;
        e.set();
        e.clear();
        assert!(e.wait_timeout(Duration::from_millis(50)).unwrap_err().is_timeout());
        Ok(())
    }

    fn a_waiting_child_wakes_when_the_parent_sets() {
        let e = Event::new()?;
        let mut child = Process::spawn({
            let e = e.clone();
            move || e.wait().is_ok() && e.is_set()
        })?;
        thread::sleep(Duration::from_millis(100));
        assert!(child.is_alive(), "still waiting");
        e.set();
        assert!(child.join()?);
        Ok(())
    }

    fn every_waiter_wakes() {
        let e = Event::new()?;
        let mut children = (0..3)
            .map(|_| {
                let e = e.clone();
                Process::spawn(move || e.wait_timeout(Duration::from_secs(50)).is_ok())
            })
            .collect::<mpcore::Result<Vec<_>>>()?;
        thread::sleep(Duration::from_millis(100));
        e.set();
        for child in &mut children {
            assert!(child.join()?);
        }
        Ok(())
    }

    fn set_clear_and_is_set() {
        let e = Event::new()?;
        assert!(!e.is_set());
        e.set();
        e.set();
        assert!(e.is_set());
        e.wait()?; // returns at once
        e.wait_timeout(Duration::ZERO)?;
        let mut child = Process::spawn({
            let e = e.clone();
            move || {
                e.clear();
                !e.is_set()
            }
        })?;
        assert!(child.join()?);
        assert!(!e.is_set(), "the child's clear is the parent's");
        assert!(e.wait_timeout(Duration::from_millis(10)).unwrap_err().is_timeout());
        Ok(())
    }

    fn a_killed_waiter_does_not_break_the_event() {
        let e = Event::new()?;
        let mut victim = Process::spawn({
            let e = e.clone();
            move || e.wait().is_ok()
        })?;
        thread::sleep(Duration::from_millis(100));
        victim.kill()?;
        assert!(victim.join().is_err());
        e.set();
        let mut child = Process::spawn({
            let e = e.clone();
            move || e.wait().is_ok()
        })?;
        assert!(child.join()?);
        Ok(())
    }

    fn a_huge_timeout_waits_like_no_timeout() {
        for huge in [Duration::MAX, Duration::from_secs(1 << 62), Duration::from_secs(i64::MAX as u64)] {
            let e = Event::new()?;
            let mut child = Process::spawn({
                let e = e.clone();
                move || {
                    thread::sleep(Duration::from_millis(100));
                    e.set();
                }
            })?;
            e.wait_timeout(huge)?;
            child.join()?;
        }
        Ok(())
    }

    fn wait_timeout_0() {
        times_out_after(Duration::ZERO)
    }

    fn wait_timeout_1ms() {
        times_out_after(Duration::from_millis(1))
    }

    fn wait_timeout_999ms() {
        times_out_after(Duration::from_millis(999))
    }

    fn wait_timeout_1500ms() {
        times_out_after(Duration::from_millis(1500))
    }

    fn wait_timeout_10s() {
        times_out_after(Duration::from_secs(10))
    }
}
