//! What a Queue holds, as Python's does: a million messages with no reader,
//! children that put and exit before anyone reads, a bound when asked for
//! one, memory given back as it is read, and no torn or doubled message
//! when producers and consumers are killed at random moments.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mpcore::{Error, Event, Process, Queue, Signal};
use serde::{Deserialize, Serialize};
use testkit::within;

const LIMIT: Duration = Duration::from_secs(120);
/// The memory a drained queue may keep: its warm first 8 MiB, the page of
/// its lock and counters, and the page where the last message ended.
const KEPT: u64 = (8 << 20) + 2 * 4096;

#[test]
fn a_million_puts_with_no_reader_then_a_million_gets() {
    within(LIMIT, || {
        const N: u64 = 1_000_000;
        let q: Queue<u64> = Queue::new().unwrap();
        for i in 0..N {
            // try_put: with no reader, not one of them may need to wait.
            q.try_put(i).unwrap();
        }
        assert_eq!(q.qsize(), N as usize);
        let held = q.memory_used().unwrap();
        assert!(held >= N * 8, "{held} bytes for {N} messages");
        for i in 0..N {
            assert_eq!(q.try_get().unwrap(), i);
        }
        assert!(q.empty());
        assert!(matches!(q.try_get(), Err(Error::Empty)));
        let kept = q.memory_used().unwrap();
        assert!(kept <= KEPT, "{kept} bytes kept after draining");
    });
}

#[test]
fn a_queue_that_held_a_gibibyte_gives_it_back_as_it_is_read() {
    within(LIMIT, || {
        const BLOCK: usize = 16 << 20;
        let q: Queue<Vec<u8>> = Queue::new().unwrap();
        for i in 0..64u8 {
            q.put_bytes(&vec![i; BLOCK]).unwrap();
        }
        let held = q.memory_used().unwrap();
        assert!(held >= 1 << 30, "{held} bytes while holding 1 GiB");
        for i in 0..32u8 {
            let block = q.get_bytes().unwrap();
            assert!(block.len() == BLOCK && block.iter().all(|&b| b == i));
        }
        let half = q.memory_used().unwrap();
        assert!(
            half <= (512 << 20) + 2 * (16 << 20) + KEPT,
            "{half} bytes with half of it read"
        );
        for i in 32..64u8 {
            assert_eq!(q.get_bytes().unwrap()[0], i);
        }
        let kept = q.memory_used().unwrap();
        assert!(kept <= KEPT, "{kept} bytes kept after draining");
    });
}

#[test]
fn children_put_and_exit_before_anyone_reads() {
    within(LIMIT, || {
        const CHILDREN: u32 = 4;
        const EACH: u32 = 50_000;
        let q: Queue<(u32, u32)> = Queue::new().unwrap();
        for child in 0..CHILDREN {
            let q = q.clone();
            let mut p = Process::spawn(move || {
                for i in 0..EACH {
                    q.put((child, i)).unwrap();
                }
            })
            .unwrap();
            // Joined before a single get: Python's "join before you drain"
            // deadlock cannot happen here.
            p.join().unwrap();
        }
        assert_eq!(q.qsize(), (CHILDREN * EACH) as usize);
        let mut next = [0u32; CHILDREN as usize];
        for _ in 0..CHILDREN * EACH {
            let (child, i) = q.try_get().unwrap();
            assert_eq!(i, next[child as usize], "each child's messages in order");
            next[child as usize] += 1;
        }
        assert!(q.empty());
    });
}

#[test]
fn a_bounded_queue_waits_when_full() {
    within(LIMIT, || {
        let q: Queue<u32> = Queue::bounded(3).unwrap();
        for i in 0..3 {
            q.put(i).unwrap();
        }
        assert!(q.full());
        assert!(matches!(q.try_put(9), Err(Error::Full)));
        let waited = std::time::Instant::now();
        assert!(matches!(
            q.put_timeout(9, Duration::from_millis(100)),
            Err(Error::Timeout(d)) if d == Duration::from_millis(100)
        ));
        assert!(waited.elapsed() >= Duration::from_millis(100));
        // A put that waits is let in by a get in another process.
        let consumer = q.clone();
        let mut p = Process::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            consumer.get().unwrap()
        })
        .unwrap();
        q.put(3).unwrap();
        assert_eq!(p.join().unwrap(), 0);
        assert_eq!(
            (0..3).map(|_| q.try_get().unwrap()).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert!(matches!(
            Queue::<u32>::bounded(0),
            Err(Error::InvalidArgument(_))
        ));
    });
}

#[test]
fn a_zero_timeout_takes_or_puts_what_is_there() {
    let q: Queue<u32> = Queue::bounded(1).unwrap();
    q.put_timeout(1, Duration::ZERO).unwrap();
    assert!(matches!(
        q.put_timeout(2, Duration::ZERO),
        Err(Error::Timeout(_))
    ));
    assert_eq!(q.get_timeout(Duration::ZERO).unwrap(), 1);
    assert!(matches!(
        q.get_timeout(Duration::ZERO),
        Err(Error::Timeout(_))
    ));
}

#[test]
fn a_message_over_256_mib_is_refused_with_its_size() {
    let q: Queue<Vec<u8>> = Queue::new().unwrap();
    let big = vec![0u8; (256 << 20) + 1];
    match q.put_bytes(&big) {
        Err(Error::MessageTooLarge { len, max }) => {
            // The message is the bytes and their length, as put encodes it.
            assert_eq!(max, 256 << 20);
            assert!(len > big.len(), "{len}");
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    assert!(q.empty());
}

/// A message whose body is derived from its header, so that a torn one
/// cannot pass for whole.
#[derive(Debug, Serialize, Deserialize)]
struct Checked {
    producer: u32,
    seq: u32,
    body: Vec<u32>,
}

impl Checked {
    fn new(producer: u32, seq: u32) -> Checked {
        let len = (seq % 64) as usize;
        Checked {
            producer,
            seq,
            body: (0..len as u32).map(|i| producer ^ seq ^ i).collect(),
        }
    }

    fn is_whole(&self) -> bool {
        self.body.len() == (self.seq % 64) as usize
            && self
                .body
                .iter()
                .enumerate()
                .all(|(i, &b)| b == self.producer ^ self.seq ^ i as u32)
    }
}

#[test]
fn producers_and_consumers_killed_at_random_lose_at_most_what_they_held() {
    within(LIMIT, || {
        const PRODUCERS: u32 = 4;
        const CONSUMERS: u32 = 3;
        let work: Queue<Checked> = Queue::new().unwrap();
        // Each consumer hands on at once what it took, so that a killed
        // consumer loses at most the message it was holding.
        let taken: Queue<(u32, u32, bool)> = Queue::new().unwrap();
        // Producers put until told to stop, and say how many they put: so
        // they are all still busy when one of them is killed, however fast
        // the machine.
        let stop = Event::new().unwrap();

        let mut producers: Vec<Process<u32>> = (0..PRODUCERS)
            .map(|producer| {
                let (work, stop) = (work.clone(), stop.clone());
                Process::spawn(move || {
                    let mut seq = 0;
                    while !stop.is_set() {
                        work.put(Checked::new(producer, seq)).unwrap();
                        seq += 1;
                    }
                    seq
                })
                .unwrap()
            })
            .collect();
        let mut consumers: Vec<Process<()>> = (0..CONSUMERS)
            .map(|_| {
                let (work, taken) = (work.clone(), taken.clone());
                Process::spawn(move || {
                    while let Ok(m) = work.get() {
                        if m.producer == u32::MAX {
                            return;
                        }
                        taken.put((m.producer, m.seq, m.is_whole())).unwrap();
                    }
                })
                .unwrap()
            })
            .collect();

        // Kill one producer and one consumer at moments that differ from
        // run to run, while everyone is busy.
        let pause = |n: u64| std::thread::sleep(Duration::from_micros(n));
        let seed = std::process::id() as u64;
        pause(1_000 + seed % 3_000);
        producers[0].kill().unwrap();
        pause(1_000 + seed % 3_000);
        consumers[0].kill().unwrap();
        assert_eq!(
            producers[0].join().unwrap_err().signal(),
            Some(Signal::SIGKILL)
        );
        assert_eq!(
            consumers[0].join().unwrap_err().signal(),
            Some(Signal::SIGKILL)
        );
        pause(2_000);
        stop.set();
        let counts: Vec<u32> = producers[1..]
            .iter_mut()
            .map(|p| p.join().unwrap())
            .collect();
        for _ in 1..CONSUMERS {
            work.put(Checked {
                producer: u32::MAX,
                seq: 0,
                body: Vec::new(),
            })
            .unwrap();
        }
        for c in &mut consumers[1..] {
            c.join().unwrap();
        }

        let mut seen: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
        while let Ok((producer, seq, whole)) = taken.try_get() {
            assert!(whole, "message {seq} of producer {producer} was torn");
            assert!(
                seen.entry(producer).or_default().insert(seq),
                "message {seq} of producer {producer} arrived twice"
            );
        }
        // What is still in the work queue was never taken: count it too.
        while let Ok(m) = work.try_get() {
            assert!(m.is_whole());
            assert!(seen.entry(m.producer).or_default().insert(m.seq));
        }
        // The survivors' messages all arrived, but for at most the one the
        // killed consumer held; the killed producer's are a prefix of its
        // sequence (whole messages only), less at most that one too.
        let mut missing = 0;
        for (producer, &count) in (1..PRODUCERS).zip(&counts) {
            let got = seen.get(&producer).cloned().unwrap_or_default();
            assert!(got.iter().all(|&seq| seq < count), "producer {producer}");
            missing += count as usize - got.len();
        }
        let killed = seen.get(&0).cloned().unwrap_or_default();
        if let Some(&last) = killed.iter().next_back() {
            missing += last as usize + 1 - killed.len();
        }
        assert!(missing <= 1, "{missing} messages lost, at most 1 allowed");

        // And the queue goes on working for everyone else.
        work.put(Checked::new(7, 7)).unwrap();
        assert!(work.get_timeout(Duration::from_secs(5)).unwrap().is_whole());
    });
}

#[test]
fn large_messages_going_round_the_ring_arrive_whole() {
    within(LIMIT, || {
        // Sizes that do not divide the ring's pages, so that the ring goes
        // round at every kind of position while the reader keeps up or not.
        let sizes = [1 << 20, (1 << 20) + 24, 3 << 19, 700_001, 8, 2 << 20];
        for round in 0..20u8 {
            let q: Queue<Vec<u8>> = Queue::new().unwrap();
            let child_q = q.clone();
            let mut child = Process::spawn(move || {
                for (i, &size) in sizes.iter().cycle().take(40).enumerate() {
                    child_q.put_bytes(&vec![round ^ i as u8; size]).unwrap();
                }
            })
            .unwrap();
            for (i, &size) in sizes.iter().cycle().take(40).enumerate() {
                let got = match q.get_bytes() {
                    Ok(got) => got,
                    Err(e) => panic!("round {round}, message {i} of {size}: {e}"),
                };
                assert_eq!(got.len(), size, "round {round}, message {i}");
                if let Some(bad) = got.iter().position(|&b| b != round ^ i as u8) {
                    panic!(
                        "round {round}, message {i} of {size}: byte {bad} is {}",
                        got[bad]
                    );
                }
            }
            child.join().unwrap();
        }
    });
}

/// Puts `n` numbers from `from` with `try_put`, each of which must find
/// room: the queue holds far less than its 2 GiB.
fn try_put_all(q: &Queue<u64>, from: u64, n: u64) {
    for i in from..from + n {
        if let Err(e) = q.try_put(i) {
            panic!(
                "put {i} failed with {} messages ({} MiB of memory) queued: {e}",
                q.qsize(),
                q.memory_used().unwrap() >> 20
            );
        }
    }
}

/// Gets every message that is there, in order, from `from` up to `to`.
fn get_in_order(q: &Queue<u64>, from: u64, to: u64) {
    for i in from..to {
        assert_eq!(q.try_get().unwrap(), i);
    }
    assert!(matches!(q.try_get(), Err(Error::Empty)));
}

#[test]
fn a_reader_that_took_a_few_messages_leaves_the_queue_its_whole_size() {
    within(LIMIT, || {
        // A reader took the first messages: the head has moved, by a few
        // records.
        let q: Queue<u64> = Queue::new().unwrap();
        try_put_all(&q, 0, 4);
        for i in 0..3 {
            assert_eq!(q.try_get().unwrap(), i);
        }
        // A million more, 16-24 MiB of records, with nobody reading.
        try_put_all(&q, 4, 1_000_000);
        assert_eq!(q.qsize(), 1_000_001);
        get_in_order(&q, 3, 1_000_004);
        let kept = q.memory_used().unwrap();
        assert!(kept <= KEPT, "{kept} bytes kept after draining");
    });
}

#[test]
fn a_reader_that_kept_up_then_stopped_leaves_the_queue_its_whole_size() {
    within(LIMIT, || {
        // A reader that keeps up, message by message, for long enough that
        // the ring goes round its first pages a few times; then it stops.
        let q: Queue<u64> = Queue::new().unwrap();
        for i in 0..1_000_000 {
            try_put_all(&q, i, 1);
            assert_eq!(q.try_get().unwrap(), i);
        }
        // Then it lags a few messages behind for a while, and stops.
        try_put_all(&q, 1_000_000, 8);
        for i in 1_000_008..1_300_000 {
            try_put_all(&q, i, 1);
            assert_eq!(q.try_get().unwrap(), i - 8);
        }
        try_put_all(&q, 1_300_000, 1_000_000);
        assert_eq!(q.qsize(), 1_000_008);
        get_in_order(&q, 1_299_992, 2_300_000);
        let kept = q.memory_used().unwrap();
        assert!(kept <= KEPT, "{kept} bytes kept after draining");
    });
}

#[test]
fn a_queue_drained_far_into_its_ring_still_holds_a_million() {
    within(LIMIT, || {
        // Emptied with its tail 2 MiB into the ring: the next put starts
        // again at the start, in front of a head that stays where it is.
        let q: Queue<u64> = Queue::new().unwrap();
        try_put_all(&q, 0, 131_072);
        get_in_order(&q, 0, 131_072);
        try_put_all(&q, 0, 1_000_000);
        get_in_order(&q, 0, 1_000_000);
    });
}

#[test]
fn a_queue_filled_while_its_reader_started_is_drained_by_it() {
    within(LIMIT, || {
        // Python's "fill the queue, then let the consumer go", with a
        // consumer that took a few messages before it was told to wait.
        const N: u64 = 1_000_000;
        let q: Queue<u64> = Queue::new().unwrap();
        let go = Event::new().unwrap();
        let (child_q, child_go) = (q.clone(), go.clone());
        let mut consumer = Process::spawn(move || {
            for i in 0..3 {
                assert_eq!(child_q.get().unwrap(), i);
            }
            child_go.wait_timeout(Duration::from_secs(60)).unwrap();
            for i in 3..N {
                assert_eq!(child_q.get_timeout(Duration::from_secs(60)).unwrap(), i);
            }
        })
        .unwrap();
        for i in 0..3 {
            q.put(i).unwrap();
        }
        while !q.empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        for i in 3..N {
            // A put that waits would wait for ever: the consumer waits for
            // `go`. Give up instead, and say so.
            if let Err(e) = q.put_timeout(i, Duration::from_secs(10)) {
                let queued = q.qsize();
                consumer.kill().unwrap();
                let _ = consumer.join();
                panic!("put {i} with {queued} queued: {e}");
            }
        }
        go.set();
        consumer.join().unwrap();
        assert!(q.empty());
    });
}

#[test]
fn a_queue_drained_twice_far_into_its_ring_keeps_no_page_there() {
    within(LIMIT, || {
        // Twice: a queue filled far beyond its warm 8 MiB and drained,
        // then a put that starts again at the start, leaving a mark at the
        // end of the lap for the reader, and its get.
        let q: Queue<Vec<u8>> = Queue::new().unwrap();
        for blocks in [10, 5] {
            for _ in 0..blocks {
                q.put_bytes(&[7; 3 << 20]).unwrap();
            }
            for _ in 0..blocks {
                assert_eq!(q.get_bytes().unwrap().len(), 3 << 20);
            }
            q.put_bytes(b"again").unwrap();
            assert_eq!(q.get_bytes().unwrap(), b"again");
        }
        // Nothing beyond the warm pages holds a message: not even the
        // pages of the marks.
        let kept = q.memory_used().unwrap();
        assert!(kept <= KEPT, "{kept} bytes kept after draining");
    });
}
