//! `Event` across processes: waiters wake when it is set, timeouts mean
//! what they say, and a waiter that is killed leaves nothing behind.

#[macro_use]
mod isolate;

use std::thread;
use std::time::{Duration, Instant};

use mpcore::{Error, Event, Process};

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

isolated! {
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
