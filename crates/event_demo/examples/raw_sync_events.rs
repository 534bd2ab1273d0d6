//! Chapter 9's events on a published crate: raw_sync's `Event` in a
//! shared_memory segment, beside mpcore's `Event`. Two children wait, the
//! parent sets the event, both wake; a wait that nobody ends runs out;
//! and raw_sync's auto-reset kind, which Python does not have, wakes one
//! waiter per set.
//!
//!     cargo run -p event_demo --example raw_sync_events
//!
//! raw_sync's calls are `unsafe` (raw pointers into shared memory):
//! `course::published` makes them, behind the promise each one keeps, and
//! gives this example a safe `RawSyncEvent`. A child reaches its event by
//! opening the segment by name.

use std::time::Duration;

use course::published::RawSyncEvent;
use mpcore::Process;

const WAIT: Duration = Duration::from_secs(2);

/// In a child: opens the segment by name and waits for its event.
fn wait_in_child(os_id: &str, timeout: Duration) -> bool {
    match RawSyncEvent::open(os_id) {
        Ok(event) => event.wait_timeout(timeout).is_ok(),
        Err(_) => false,
    }
}

/// Starts two waiting children, sets the event once, and counts how many
/// woke.
fn woken_by_one_set(auto_reset: bool) -> Result<usize, Box<dyn std::error::Error>> {
    let event = RawSyncEvent::create(auto_reset)?;
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let os_id = event.os_id().to_owned();
            Process::spawn(move || wait_in_child(&os_id, WAIT))
        })
        .collect::<Result<_, _>>()?;
    std::thread::sleep(Duration::from_millis(200));
    event.set()?;
    let mut woke = 0;
    for mut waiter in waiters {
        woke += usize::from(waiter.join()?);
    }
    Ok(woke)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let woke = woken_by_one_set(false)?;
    println!("raw_sync: one set woke {woke} of 2 waiting children");
    let event = RawSyncEvent::create(false)?;
    match event.wait_timeout(Duration::from_millis(200)) {
        Ok(()) => println!("raw_sync: a wait of 200ms that nobody ends: woke"),
        Err(e) => println!("raw_sync: a wait of 200ms that nobody ends: \"{e}\""),
    }
    let woke = woken_by_one_set(true)?;
    println!("raw_sync: auto-reset: one set woke {woke} of 2 waiting children");

    let event = mpcore::Event::new()?;
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let event = event.clone();
            Process::spawn(move || event.wait_timeout(WAIT).is_ok())
        })
        .collect::<Result<_, _>>()?;
    std::thread::sleep(Duration::from_millis(200));
    event.set();
    let mut woke = 0;
    for mut waiter in waiters {
        woke += usize::from(waiter.join()?);
    }
    println!("mpcore:   one set woke {woke} of 2 waiting children");
    let unset = mpcore::Event::new()?;
    match unset.wait_timeout(Duration::from_millis(200)) {
        Ok(()) => println!("mpcore:   a wait of 200ms that nobody ends: woke"),
        Err(e) => println!("mpcore:   a wait of 200ms that nobody ends: \"{e}\""),
    }
    Ok(())
}
