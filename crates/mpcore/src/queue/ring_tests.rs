//! The ring's unit tests (`ring.rs`): producers and consumers killed
//! holding a lock.

use super::*;

#[test]
fn a_producer_that_died_mid_put_left_no_message_and_a_working_ring() {
    let ring = Ring::new(u64::MAX).unwrap();
    ring.put(&[b"first"], Wait::Never).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            // Half a put, then the thread ends holding the lock: a
            // length behind the tail, but no commit.
            let locked = ring.lock(ring.producers).unwrap();
            // SAFETY: position 16 is free space within the ring, and
            // we hold the producers' lock.
            unsafe { ring.data().add(16).cast::<u64>().write(3) };
            std::mem::forget(locked);
        });
    });
    // The next producer finds the owner dead, and goes on.
    ring.put(&[b"second"], Wait::Never).unwrap();
    assert_eq!(ring.count(), 2);
    let got = |ring: &Ring| ring.get(Wait::Never, <[u8]>::to_vec);
    assert_eq!(got(&ring).unwrap(), b"first");
    assert_eq!(got(&ring).unwrap(), b"second");
    assert!(matches!(got(&ring), Err(Error::Empty)));
}

#[test]
fn a_consumer_that_died_mid_get_left_the_message_in_place() {
    let ring = Ring::new(u64::MAX).unwrap();
    ring.put(&[b"kept"], Wait::Never).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            // The message read, then the thread ends holding the lock
            // before it moved the head.
            let locked = ring.lock(ring.consumers).unwrap();
            assert_eq!(ring.length_at(0), 4);
            std::mem::forget(locked);
        });
    });
    assert_eq!(ring.count(), 1);
    assert_eq!(ring.get(Wait::Never, <[u8]>::to_vec).unwrap(), b"kept");
}
