//! Chapter 9's events on a published crate: raw_sync's `Event` in a
//! shared_memory segment, beside mpcore's `Event`. Two children wait, the
//! parent sets the event, both wake; a wait that nobody ends runs out;
//! and raw_sync's auto-reset kind, which Python does not have, wakes one
//! waiter per set.
//!
//!     cargo run -p event_demo --example raw_sync_events
//!
//! raw_sync's calls are `unsafe` (raw pointers into shared memory), and a
//! child reaches its event by opening the segment by name.

use std::time::Duration;

use mpcore::Process;
use raw_sync::Timeout;
use raw_sync::events::{Event, EventImpl, EventInit, EventState};
use shared_memory::{Shmem, ShmemConf};

const WAIT: Duration = Duration::from_secs(2);

/// A fresh segment with a raw_sync event at its start.
fn new_event(auto_reset: bool) -> Result<(Shmem, Box<dyn EventImpl>), Box<dyn std::error::Error>> {
    let shmem = ShmemConf::new().size(Event::size_of(None) + 64).create()?;
    // SAFETY: the segment is fresh, page-aligned and large enough for the
    // event (its size plus room for alignment); no other process maps
    // it yet.
    let (event, _) = unsafe { Event::new(shmem.as_ptr(), auto_reset)? };
    Ok((shmem, event))
}

/// In a child: opens the segment by name and waits for its event.
fn wait_in_child(os_id: &str, timeout: Duration) -> bool {
    let Ok(shmem) = ShmemConf::new().os_id(os_id).open() else {
        return false;
    };
    // SAFETY: the parent made an event at the start of this segment.
    match unsafe { Event::from_existing(shmem.as_ptr()) } {
        Ok((event, _)) => event.wait(Timeout::Val(timeout)).is_ok(),
        Err(_) => false,
    }
}

/// Starts two waiting children, sets the event once, and counts how many
/// woke.
fn woken_by_one_set(auto_reset: bool) -> Result<usize, Box<dyn std::error::Error>> {
    let (shmem, event) = new_event(auto_reset)?;
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let os_id = shmem.get_os_id().to_owned();
            Process::spawn(move || wait_in_child(&os_id, WAIT))
        })
        .collect::<Result<_, _>>()?;
    std::thread::sleep(Duration::from_millis(200));
    event.set(EventState::Signaled)?;
    let mut woke = 0;
    for mut waiter in waiters {
        woke += usize::from(waiter.join()?);
    }
    Ok(woke)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let woke = woken_by_one_set(false)?;
    println!("raw_sync: one set woke {woke} of 2 waiting children");
    let (_shmem, event) = new_event(false)?;
    match event.wait(Timeout::Val(Duration::from_millis(200))) {
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
