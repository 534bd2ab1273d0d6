//! The ring's unit tests (`ring.rs`): producers and consumers killed
//! holding a lock, and a ring whose tail went on beyond the head's lap.

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

/// The message `i` of `len` bytes, each byte telling whose it is.
fn message(i: u8, len: usize) -> Vec<u8> {
    vec![i; len]
}

fn get_checked(ring: &Ring, i: u8, len: usize) {
    let got = ring.get(Wait::Never, <[u8]>::to_vec).unwrap();
    assert_eq!(got.len(), len, "message {i}");
    if let Some(bad) = got.iter().position(|&b| b != i) {
        panic!("message {i}: byte {bad} is {}", got[bad]);
    }
}

#[test]
fn a_ring_read_behind_a_jump_gives_back_only_what_was_read() {
    const MIB: usize = 1 << 20;
    let rec = record(MIB);
    let ring = Ring::new(u64::MAX).unwrap();
    let put = |i: u8| ring.put(&[&message(i, MIB)], Wait::Never).unwrap();
    // 24 messages of 1 MiB; the reader takes 23 and stays one behind.
    for i in 0..24 {
        put(i);
    }
    for i in 0..23 {
        get_checked(&ring, i, MIB);
    }
    // A small backlog past BUSY_WRAP: the next goes back to the start,
    // and when the start is full up to the head (which stopped), on
    // beyond the lap, past 24 MiB.
    let lap_end = 24 * rec;
    for i in 24..49 {
        put(i);
    }
    let tail_side = &ring.header().tail;
    let fence = Fence::load(tail_side.fence.load(Ordering::Relaxed));
    assert_eq!(
        fence,
        Some(Fence {
            from: 22 * rec,
            to: lap_end + 8
        })
    );
    assert_eq!(tail_side.lap_end.load(Ordering::Relaxed), lap_end as u64);
    // Reading the last message of the lap reaches 24 MiB, a step of
    // STEP beyond KEEP: what was read goes back, but not the 22 MiB at
    // the start, unread.
    assert!(lap_end >= KEEP + STEP);
    get_checked(&ring, 23, MIB);
    let held = ring.resident_bytes().unwrap() as usize;
    assert!(held >= 25 * MIB, "{held} bytes hold 25 MiB of messages");
    for i in 24..49 {
        get_checked(&ring, i, MIB);
    }
    assert!(matches!(ring.get(Wait::Never, |_| ()), Err(Error::Empty)));
    let kept = ring.resident_bytes().unwrap() as usize;
    assert!(kept <= KEEP + 2 * 4096, "{kept} bytes kept after draining");
    // The head came round: the next put finds the start free, and the
    // fence gone.
    ring.put(&[b"again"], Wait::Never).unwrap();
    assert_eq!(tail_side.fence.load(Ordering::Relaxed), 0);
    assert_eq!(ring.get(Wait::Never, <[u8]>::to_vec).unwrap(), b"again");
}

#[test]
fn a_producer_that_died_mid_jump_left_a_working_ring() {
    const HALF: usize = 512 << 10;
    let ring = Ring::new(u64::MAX).unwrap();
    let tail_side = &ring.header().tail;
    let put = |i: u8, len: usize| ring.put(&[&message(i, len)], Wait::Never).unwrap();
    // Emptied past EARLY_WRAP: the next message goes back to the start, in
    // front of a head that stays at the end of the lap.
    put(0, EARLY_WRAP);
    get_checked(&ring, 0, EARLY_WRAP);
    let lap_end = record(EARLY_WRAP);
    put(1, HALF);
    let tail = record(HALF);
    assert_eq!(unpack(tail_side.end.load(Ordering::Relaxed)).0, tail);
    // Half a jump: the fence, the mark and the length beyond the lap
    // written, then the thread ends holding the lock, before the commit.
    std::thread::scope(|s| {
        s.spawn(|| {
            let locked = ring.lock(ring.producers).unwrap();
            let jump = Fence {
                from: tail,
                to: lap_end + 8,
            };
            tail_side.fence.store(jump.word(), Ordering::Relaxed);
            // SAFETY: `tail` and `lap_end + 8` are free space within the
            // ring, and we hold the producers' lock.
            unsafe {
                ring.data()
                    .add(tail)
                    .cast::<u64>()
                    .write(SKIP | jump.to as u64);
                ring.data().add(jump.to).cast::<u64>().write(HALF as u64);
            }
            std::mem::forget(locked);
        });
    });
    // The next producer finds the owner dead, writes over the mark, and
    // drops the fence that never counted.
    put(2, 8);
    assert_eq!(tail_side.fence.load(Ordering::Relaxed), 0);
    // Then a jump that counts, and a message behind it while the start
    // is held.
    put(3, HALF);
    let fence = Fence::load(tail_side.fence.load(Ordering::Relaxed)).unwrap();
    assert_eq!(fence.to, lap_end + 8);
    put(4, 8);
    assert_eq!(ring.count(), 4);
    get_checked(&ring, 1, HALF);
    get_checked(&ring, 2, 8);
    get_checked(&ring, 3, HALF);
    get_checked(&ring, 4, 8);
    assert!(matches!(ring.get(Wait::Never, |_| ()), Err(Error::Empty)));
    put(5, 8);
    assert_eq!(tail_side.fence.load(Ordering::Relaxed), 0);
    get_checked(&ring, 5, 8);
}

#[test]
fn messages_put_and_got_in_random_bursts_arrive_whole_and_in_order() {
    random_bursts(0x9e37_79b9_7f4a_7c15, 400 << 20);
}

/// A reader that keeps up, falls behind, stops and catches up, at random,
/// with messages of every size, until `bytes` went through: the ring goes
/// back early, on beyond its laps and round again, and loses, tears or
/// reorders nothing, and keeps no more than it was meant to.
fn random_bursts(mut seed: u64, bytes: usize) {
    let ring = Ring::new(u64::MAX).unwrap();
    let mut random = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    let mut sizes = std::collections::VecDeque::new();
    let (mut put, mut got) = (0u64, 0u64);
    let mut moved = 0;
    while moved < bytes {
        let size = |random: &mut dyn FnMut(u64) -> u64| match random(4) {
            0 => random(64) as usize,
            1 => random(4096) as usize,
            2 => random(64 << 10) as usize,
            _ => random(2 << 20) as usize,
        };
        for _ in 0..random(48) {
            let len = size(&mut random);
            ring.put(&[&message(put as u8, len)], Wait::Never)
                .unwrap_or_else(|e| panic!("put {put} of {len}: {e}"));
            sizes.push_back(len);
            put += 1;
            moved += len;
        }
        let reads = match random(3) {
            0 => 0,
            1 => random(sizes.len() as u64 + 1),
            _ => sizes.len() as u64,
        };
        for _ in 0..reads {
            let len = sizes.pop_front().unwrap();
            get_checked(&ring, got as u8, len);
            got += 1;
        }
    }
    while let Some(len) = sizes.pop_front() {
        get_checked(&ring, got as u8, len);
        got += 1;
    }
    assert_eq!(ring.count(), 0);
    let kept = ring.resident_bytes().unwrap() as usize;
    assert!(kept <= KEEP + 2 * 4096, "{kept} bytes kept after draining");
}
