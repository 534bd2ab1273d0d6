//! `Lock` across processes: mutual exclusion, a holder that is killed, and
//! timeouts that mean what they say for every duration.

#[macro_use]
mod isolate;

use std::thread;
use std::time::{Duration, Instant};

use mpcore::{Error, Event, Lock, Process, Value};
use nix::sys::signal::{Signal, raise};

use isolate::TestResult;

/// Forks a child that takes `lock`, says so through an Event and keeps it
/// until it is killed. Returns once the child holds the lock.
fn holder(lock: &Lock) -> mpcore::Result<Process<()>> {
    let held = Event::new()?;
    let child = Process::spawn({
        let (lock, held) = (lock.clone(), held.clone());
        move || {
            let _guard = lock.acquire().expect("a free lock");
            held.set();
            thread::sleep(Duration::from_secs(120));
        }
    })?;
    held.wait()?;
    Ok(child)
}

/// `acquire_timeout(d)` on a lock another process holds: a timeout error,
/// not before `d` has passed.
fn times_out_after(d: Duration) -> TestResult {
    let lock = Lock::new()?;
    let mut child = holder(&lock)?;
    let start = Instant::now();
    let result = lock.acquire_timeout(d);
    let elapsed = start.elapsed();
    assert!(
        matches!(result, Err(Error::Timeout(t)) if t == d),
        "{result:?}"
    );
    assert!(elapsed >= d, "gave up after {elapsed:?}, before {d:?}");
    println!("acquire_timeout({d:?}) on a held lock: timed out after {elapsed:?}");

    // The same when this very thread holds the lock: Python would wait the
    // full time and then say no, and so do we.
    child.kill()?;
    let _ = child.join();
    let _ = lock.acquire(); // OwnerDied the first time: the child died holding it
    let _mine = lock.acquire()?;
    let start = Instant::now();
    let result = lock.acquire_timeout(d);
    let elapsed = start.elapsed();
    assert!(
        matches!(result, Err(Error::Timeout(t)) if t == d),
        "{result:?}"
    );
    assert!(elapsed >= d, "gave up after {elapsed:?}, before {d:?}");
    Ok(())
}

isolated! {
    fn acquire_timeout_zero_takes_a_free_lock() {
        let lock = Lock::new()?;
        drop(lock.acquire_timeout(Duration::ZERO)?);
        let mut child = holder(&lock)?;
        let result = lock.acquire_timeout(Duration::ZERO);
        assert!(
            matches!(result, Err(Error::Timeout(t)) if t.is_zero()),
            "{result:?}"
        );
        child.kill()?;
        let _ = child.join();
        Ok(())
    }

    fn only_one_process_at_a_time_holds_the_lock() {
        let lock = Lock::new()?;
        let inside = Value::new(0u32)?;
        let go = Event::new()?;
        let job = || {
            let (lock, inside, go) = (lock.clone(), inside.clone(), go.clone());
            move || {
                // One step: enter, check that nobody else is inside, leave.
                let step = || -> mpcore::Result<bool> {
                    let _held = lock.acquire()?;
                    let others = inside.get()?;
                    inside.set(others + 1)?;
                    // Stay inside a while, so that an intruder would be seen.
                    thread::sleep(Duration::from_micros(50));
                    inside.set(inside.get()? - 1)?;
                    Ok(others == 0)
                };
                go.wait().is_ok() && (0..2_000).all(|_| step().unwrap_or(false))
            }
        };
        let mut p1 = Process::spawn(job())?;
        let mut p2 = Process::spawn(job())?;
        go.set();
        assert!(p1.join()? && p2.join()?, "never two inside at once");
        assert_eq!(inside.get()?, 0);
        Ok(())
    }

    fn try_acquire_says_whether_it_got_the_lock() {
        let lock = Lock::new()?;
        let guard = lock.try_acquire()?.expect("a free lock");
        assert!(lock.try_acquire()?.is_none(), "held by this thread");
        let mut child = Process::spawn({
            let lock = lock.clone();
            move || matches!(lock.try_acquire(), Ok(None))
        })?;
        assert!(child.join()?, "held by the parent, seen from the child");
        guard.release()?;
        let mut child = Process::spawn({
            let lock = lock.clone();
            move || matches!(lock.try_acquire(), Ok(Some(_)))
        })?;
        assert!(child.join()?);
        assert!(lock.acquire().is_ok());
        Ok(())
    }

    fn acquiring_twice_in_one_thread_is_an_error_not_a_hang() {
        let lock = Lock::new()?;
        let _held = lock.acquire()?;
        assert!(matches!(lock.acquire(), Err(Error::WouldDeadlock)));
        Ok(())
    }

    fn a_holder_killed_by_sigkill_does_not_block_everyone() {
        let lock = Lock::new()?;
        let held = Event::new()?;
        let mut child = Process::spawn({
            let (lock, held) = (lock.clone(), held.clone());
            move || {
                let _guard = lock.acquire().expect("a free lock");
                held.set();
                // Die holding it: no destructor, no unlock.
                let _ = raise(Signal::SIGKILL);
            }
        })?;
        held.wait()?;
        let died = child.join().unwrap_err();
        assert_eq!(died.signal(), Some(mpcore::Signal::SIGKILL), "{died}");

        let err = lock.acquire().unwrap_err();
        assert!(err.is_owner_died(), "{err}");
        println!("after the holder's death: {err}");
        // Reported once; from then on the lock works, here and in children.
        drop(lock.acquire()?);
        let mut child = Process::spawn({
            let lock = lock.clone();
            move || lock.acquire().is_ok()
        })?;
        assert!(child.join()?);
        assert!(lock.try_acquire()?.is_some());
        Ok(())
    }

    fn a_waiter_is_woken_when_the_holder_is_killed() {
        let lock = Lock::new()?;
        let mut holder = holder(&lock)?;
        // A second process is blocked in acquire() when the holder dies.
        let mut waiter = Process::spawn({
            let lock = lock.clone();
            move || match lock.acquire() {
                Err(Error::OwnerDied) => "owner died".to_owned(),
                other => format!("{other:?}"),
            }
        })?;
        thread::sleep(Duration::from_millis(200));
        holder.kill()?;
        let _ = holder.join();
        assert_eq!(waiter.join()?, "owner died");
        // try_acquire and acquire_timeout see a later death too.
        let mut holder2 = self::holder(&lock)?;
        holder2.kill()?;
        let _ = holder2.join();
        assert!(lock.try_acquire().unwrap_err().is_owner_died());
        let mut holder3 = self::holder(&lock)?;
        holder3.kill()?;
        let _ = holder3.join();
        assert!(lock.acquire_timeout(Duration::from_secs(10)).unwrap_err().is_owner_died());
        assert!(lock.acquire_timeout(Duration::ZERO).is_ok());
        Ok(())
    }

    fn acquire_timeout_succeeds_when_the_lock_comes_free_in_time() {
        let lock = Lock::new()?;
        let held = Event::new()?;
        let mut child = Process::spawn({
            let (lock, held) = (lock.clone(), held.clone());
            move || {
                let _guard = lock.acquire().expect("a free lock");
                held.set();
                thread::sleep(Duration::from_millis(200));
            }
        })?;
        held.wait()?;
        let _guard = lock.acquire_timeout(Duration::from_secs(30))?;
        child.join()?;
        // A zero timeout takes a free lock.
        let lock2 = Lock::new()?;
        assert!(lock2.acquire_timeout(Duration::ZERO).is_ok());
        Ok(())
    }

    fn acquire_timeout_0() {
        times_out_after(Duration::ZERO)
    }

    fn acquire_timeout_1ms() {
        times_out_after(Duration::from_millis(1))
    }

    fn acquire_timeout_999ms() {
        times_out_after(Duration::from_millis(999))
    }

    fn acquire_timeout_1500ms() {
        times_out_after(Duration::from_millis(1500))
    }

    fn acquire_timeout_10s() {
        times_out_after(Duration::from_secs(10))
    }

    fn acquire_timeout_without_end_waits_like_acquire() {
        // Deadlines past the end of time (or of the kernel's clock) mean
        // "wait as long as it takes", not an error.
        for huge in [Duration::MAX, Duration::from_secs(1 << 62), Duration::from_secs(i64::MAX as u64)] {
            let lock = Lock::new()?;
            let held = Event::new()?;
            let mut child = Process::spawn({
                let (lock, held) = (lock.clone(), held.clone());
                move || {
                    let _guard = lock.acquire().expect("a free lock");
                    held.set();
                    thread::sleep(Duration::from_millis(100));
                }
            })?;
            held.wait()?;
            drop(lock.acquire_timeout(huge)?);
            child.join()?;
        }
        Ok(())
    }
}
