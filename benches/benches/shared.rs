//! Shared state: 2 processes x 100,000 locked increments of a `Value`
//! (beside an atomic in shared memory, the floor, and `std::sync::Mutex`
//! between 2 threads), an uncontended `Lock` acquire/release (beside an
//! uncontended `std::sync::Mutex`), and the `Event` set-to-wake round trip
//! (beside a raw pipe ping-pong). Each has its published-crate baseline:
//! raw_sync's mutex and auto-reset events in a segment of the
//! `shared_memory` crate (`mpbench::published`). Last, what a named
//! segment costs to make: the `shared_memory` crate's create + drop beside
//! `mpcore::SharedMemory`'s (which also reserves its memory, takes its
//! lock and hands its file to the program's one tracker process, started
//! once, before the timing) and an anonymous `Value`. Run with `cargo
//! bench -p mpbench --bench shared`.

use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use course::floor;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mpbench::published::{self, RawSyncCounter};
use mpcore::{Lock, SharedMemory, Value};

const PER_PROC: u64 = 100_000;
const ROUNDS: u64 = 1_000;

fn mutex_threads(per_thread: u64) -> u64 {
    let counter = Arc::new(Mutex::new(0u64));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let counter = Arc::clone(&counter);
            std::thread::spawn(move || {
                for _ in 0..per_thread {
                    *counter.lock().unwrap() += 1;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    *counter.lock().unwrap()
}

fn shared(c: &mut Criterion) {
    // Check every answer once, outside the timed loops.
    assert_eq!(
        mpbench::value_incr(2, PER_PROC).unwrap(),
        2 * PER_PROC as i64
    );
    assert_eq!(
        floor::shared_atomic_increments(2, PER_PROC).unwrap(),
        2 * PER_PROC
    );
    assert_eq!(mutex_threads(PER_PROC), 2 * PER_PROC);
    assert_eq!(mpbench::event_wake(ROUNDS).unwrap(), ROUNDS);
    assert_eq!(published::raw_sync_incr(2, PER_PROC).unwrap(), 2 * PER_PROC);
    assert_eq!(published::raw_sync_event_wake(ROUNDS).unwrap(), ROUNDS);

    let mut group = c.benchmark_group("shared");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));

    group.throughput(Throughput::Elements(2 * PER_PROC));
    group.bench_function("mpcore Value, 2 processes x 100,000 *v.lock() += 1", |b| {
        b.iter(|| mpbench::value_incr(2, PER_PROC).unwrap())
    });
    group.bench_function("floor: shared AtomicU64, 2 processes x 100,000", |b| {
        b.iter(|| floor::shared_atomic_increments(2, PER_PROC).unwrap())
    });
    group.bench_function("std Mutex, 2 threads x 100,000", |b| {
        b.iter(|| mutex_threads(PER_PROC))
    });
    group.bench_function("raw_sync Mutex, 2 processes x 100,000", |b| {
        b.iter(|| published::raw_sync_incr(2, PER_PROC).unwrap())
    });

    let lock = Lock::new().unwrap();
    let mutex = Mutex::new(());
    let raw_sync = RawSyncCounter::new().unwrap();
    group.throughput(Throughput::Elements(1));
    group.bench_function("mpcore Lock acquire + release, uncontended", |b| {
        b.iter(|| drop(black_box(&lock).acquire().unwrap()))
    });
    group.bench_function("std Mutex lock + unlock, uncontended", |b| {
        b.iter(|| drop(black_box(&mutex).lock().unwrap()))
    });
    group.bench_function("raw_sync Mutex lock + unlock, uncontended", |b| {
        b.iter(|| black_box(&raw_sync).lock_unlock().unwrap())
    });

    group.throughput(Throughput::Elements(ROUNDS));
    group.bench_function("mpcore Event ping-pong, 1,000 rounds", |b| {
        b.iter(|| mpbench::event_wake(ROUNDS).unwrap())
    });
    group.bench_function("floor: pipe ping-pong, 1,000 rounds", |b| {
        b.iter(|| floor::fork_pipe_pingpong(ROUNDS).unwrap())
    });
    group.bench_function("raw_sync auto-reset Event ping-pong, 1,000 rounds", |b| {
        b.iter(|| published::raw_sync_event_wake(ROUNDS).unwrap())
    });

    group.throughput(Throughput::Elements(1));
    group.bench_function("shared_memory crate: create + drop a 4 KiB segment", |b| {
        b.iter(|| published::shared_memory_create_drop().unwrap())
    });
    group.bench_function(
        "mpcore SharedMemory::new(4096) + drop (with its tracker)",
        |b| b.iter(|| SharedMemory::new(4096).unwrap()),
    );
    group.bench_function("mpcore Value::new + drop (anonymous, no name)", |b| {
        b.iter(|| Value::new(0u64).unwrap())
    });
    group.finish();
}

criterion_group!(benches, shared);
criterion_main!(benches);
