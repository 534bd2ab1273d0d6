//! Queue: across processes, every message arrives once and whole, and
//! timeouts mean what they say.

use std::time::{Duration, Instant};

use mpcore::{Error, Process, Queue};
use serde::{Deserialize, Serialize};
use testkit::within;

const LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Msg {
    Item { producer: u32, seq: u32 },
    Stop,
}

#[test]
fn many_producers_and_consumers_lose_and_duplicate_nothing() {
    within(LIMIT, || {
        const PRODUCERS: u32 = 4;
        const CONSUMERS: usize = 2;
        const EACH: u32 = 10_000;
        let q = Queue::new().unwrap();

        let mut consumers: Vec<Process<Vec<Msg>>> = (0..CONSUMERS)
            .map(|_| {
                let q = q.clone();
                Process::spawn(move || {
                    let mut got = Vec::new();
                    loop {
                        match q.get().unwrap() {
                            Msg::Stop => return got,
                            item => got.push(item),
                        }
                    }
                })
                .unwrap()
            })
            .collect();
        let mut producers: Vec<Process<()>> = (0..PRODUCERS)
            .map(|producer| {
                let q = q.clone();
                Process::spawn(move || {
                    for seq in 0..EACH {
                        q.put(Msg::Item { producer, seq }).unwrap();
                    }
                })
                .unwrap()
            })
            .collect();

        for p in &mut producers {
            p.join().unwrap();
        }
        for _ in 0..CONSUMERS {
            q.put(Msg::Stop).unwrap();
        }
        let per_consumer: Vec<Vec<Msg>> = consumers.iter_mut().map(|c| c.join().unwrap()).collect();

        // Each producer's messages reach any one consumer in the order sent.
        for got in &per_consumer {
            for producer in 0..PRODUCERS {
                let seqs: Vec<u32> = got
                    .iter()
                    .filter_map(|m| match *m {
                        Msg::Item { producer: p, seq } if p == producer => Some(seq),
                        _ => None,
                    })
                    .collect();
                assert!(
                    seqs.windows(2).all(|w| w[0] < w[1]),
                    "producer {producer} reordered"
                );
            }
        }
        let mut all: Vec<Msg> = per_consumer.into_iter().flatten().collect();
        all.sort();
        let expected: Vec<Msg> = (0..PRODUCERS)
            .flat_map(|producer| (0..EACH).map(move |seq| Msg::Item { producer, seq }))
            .collect();
        assert_eq!(all.len(), expected.len(), "messages lost or duplicated");
        assert!(all == expected, "every message exactly once");
        assert!(matches!(q.try_get(), Err(Error::Empty)));
    });
}

#[test]
fn an_8_mib_message_arrives_intact() {
    within(LIMIT, || {
        const LEN: usize = 8 << 20;
        let pattern = |i: usize| (i.wrapping_mul(40_503) ^ (i >> 11)) as u8;
        let q = Queue::<Vec<u8>>::new().unwrap();
        let child_q = q.clone();
        // The child puts and exits before the parent reads: a large message
        // must not hold the child hostage (Python's "join before drain" trap).
        let mut p = Process::spawn(move || {
            child_q
                .put((0..LEN).map(pattern).collect())
                .map_err(|e| e.to_string())
        })
        .unwrap();
        p.join().unwrap().unwrap();
        let data = q.get_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(data.len(), LEN);
        assert!(
            data.iter().enumerate().all(|(i, &b)| b == pattern(i)),
            "bytes changed"
        );
    });
}

#[test]
fn threads_and_processes_share_one_queue() {
    within(LIMIT, || {
        let q = Queue::<u64>::new().unwrap();
        std::thread::scope(|s| {
            for t in 0..2u64 {
                let q = q.clone();
                s.spawn(move || q.put(100 + t).unwrap());
            }
        });
        let child_q = q.clone();
        let mut p = Process::spawn(move || child_q.put(200).unwrap()).unwrap();
        p.join().unwrap();
        let mut got: Vec<u64> = (0..3).map(|_| q.get().unwrap()).collect();
        got.sort();
        assert_eq!(got, [100, 101, 200]);
    });
}

#[test]
fn get_timeout_waits_its_full_duration_then_times_out() {
    within(LIMIT, || {
        let q = Queue::<u32>::new().unwrap();
        for d in [0, 1, 250, 999, 1500].map(Duration::from_millis) {
            let started = Instant::now();
            let err = q.get_timeout(d).unwrap_err();
            let waited = started.elapsed();
            assert!(err.is_timeout(), "{d:?}: {err:?}");
            assert!(waited >= d, "{d:?}: returned after only {waited:?}");
            assert_eq!(err.to_string(), format!("timed out after {d:?}"));
        }
    });
}

#[test]
fn get_timeout_returns_an_item_that_arrives_in_time() {
    within(LIMIT, || {
        let q = Queue::<String>::new().unwrap();
        let child_q = q.clone();
        let mut p = Process::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            child_q.put("on time".to_owned()).unwrap();
        })
        .unwrap();
        assert_eq!(q.get_timeout(Duration::from_secs(30)).unwrap(), "on time");
        p.join().unwrap();
    });
}

#[test]
fn get_timeout_zero_takes_an_item_that_is_already_there() {
    within(LIMIT, || {
        let q = Queue::<u32>::new().unwrap();
        let child_q = q.clone();
        Process::spawn(move || child_q.put(5).unwrap())
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(q.get_timeout(Duration::ZERO).unwrap(), 5);
        let err = q.get_timeout(Duration::ZERO).unwrap_err();
        assert_eq!(err.to_string(), "timed out after 0ns");
    });
}

#[test]
fn try_get_is_empty_then_takes_in_fifo_order() {
    let q = Queue::<u32>::new().unwrap();
    assert!(matches!(q.try_get(), Err(Error::Empty)));
    for i in 0..5 {
        q.put(i).unwrap();
    }
    let got: Vec<u32> = (0..5).map(|_| q.try_get().unwrap()).collect();
    assert_eq!(got, [0, 1, 2, 3, 4]);
    assert_eq!(q.try_get().unwrap_err().to_string(), "the queue is empty");
}

#[test]
fn put_bytes_and_get_bytes_carry_small_and_large_messages_between_processes() {
    within(LIMIT, || {
        let q: Queue<Vec<u8>> = Queue::new().unwrap();
        let child_q = q.clone();
        let large: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
        let expected = large.clone();
        let mut child = Process::spawn(move || {
            child_q.put_bytes(b"").unwrap();
            child_q.put_bytes(b"small").unwrap();
            child_q.put_bytes(&large).unwrap(); // a large one
            child_q.put(large).unwrap(); // serde's way, read as bytes
        })
        .unwrap();
        assert_eq!(q.get_bytes().unwrap(), b"");
        assert_eq!(q.get_bytes().unwrap(), b"small");
        assert_eq!(q.get().unwrap(), expected); // put_bytes, read by serde
        assert_eq!(q.get_bytes().unwrap(), expected);
        child.join().unwrap();
    });
}

#[test]
fn messages_of_every_size_around_the_receive_buffers_arrive_whole() {
    // Sizes on both sides of each boundary of the ring and of a child's
    // result (whose packet's first 512 bytes land on the receiver's stack
    // and the rest in a per-thread buffer; over 64 KiB travel in a memfd).
    within(LIMIT, || {
        let sizes = [
            0,
            1,
            509,
            510,
            511,
            512,
            513,
            4096,
            32 * 1024 - 3,
            32 * 1024,
            40_000,
            64 * 1024 - 3,
            64 * 1024,
            70_000,
        ];
        let q: Queue<String> = Queue::new().unwrap();
        let child_q = q.clone();
        let mut child = Process::spawn(move || {
            for size in sizes {
                child_q.put("x".repeat(size)).unwrap();
            }
        })
        .unwrap();
        for size in sizes {
            let got = q.get().unwrap();
            assert_eq!(got.len(), size);
            assert!(got.bytes().all(|b| b == b'x'));
        }
        child.join().unwrap();
        for size in sizes {
            let mut child = Process::spawn(move || "y".repeat(size)).unwrap();
            assert_eq!(child.join().unwrap(), "y".repeat(size));
        }
    });
}

#[test]
fn qsize_and_empty_count_what_every_process_put_and_took() {
    within(LIMIT, || {
        let q: Queue<u32> = Queue::new().unwrap();
        assert_eq!((q.qsize(), q.empty()), (0, true));
        for x in 0..3 {
            q.put(x).unwrap();
        }
        assert_eq!((q.qsize(), q.empty()), (3, false));
        let child_q = q.clone();
        let mut child = Process::spawn(move || {
            let first = child_q.get().unwrap();
            child_q.put(10).unwrap();
            child_q.put(11).unwrap();
            (first, child_q.qsize())
        })
        .unwrap();
        // The child took one and put two: the count is shared.
        assert_eq!(child.join().unwrap(), (0, 4));
        assert_eq!(q.qsize(), 4);
        let rest: Vec<u32> = (0..4).map(|_| q.get().unwrap()).collect();
        assert_eq!(rest, [1, 2, 10, 11]);
        assert_eq!((q.qsize(), q.empty()), (0, true));
        assert!(matches!(q.try_get(), Err(Error::Empty)));
        assert_eq!(q.qsize(), 0, "a failed try_get counts nothing");
    });
}

#[test]
fn try_put_fills_a_bounded_queue_then_says_full() {
    within(LIMIT, || {
        // Python's put_nowait is try_put; an unbounded queue is full only
        // at 2 GiB, so a bound of 1,000 stands in for "full".
        const BOUND: u64 = 1_000;
        let q: Queue<u64> = Queue::bounded(BOUND as usize).unwrap();
        let mut put = 0u64;
        loop {
            match q.try_put(put) {
                Ok(()) => put += 1,
                Err(Error::Full) => break,
                Err(other) => panic!("after {put}: {other}"),
            }
            assert!(put <= BOUND, "try_put never found the queue full");
        }
        assert_eq!(put, BOUND);
        assert_eq!(q.qsize(), put as usize);
        assert!(q.full());
        let full = Error::Full.to_string();
        assert!(full.starts_with("the queue is full"), "{full}");
        // Taking one makes room for one more, and order is kept.
        assert_eq!(q.get().unwrap(), 0);
        q.try_put(put).unwrap();
        let all: Vec<u64> = (0..put).map(|_| q.get().unwrap()).collect();
        assert_eq!(all, (1..=put).collect::<Vec<_>>());
        assert!(q.empty());
        // Bytes count as messages too.
        let bytes: Queue<Vec<u8>> = Queue::new().unwrap();
        bytes.put_bytes(b"abc").unwrap();
        assert_eq!(bytes.qsize(), 1);
        assert_eq!(bytes.get_bytes().unwrap(), b"abc");
        assert_eq!(bytes.qsize(), 0);
    });
}
