//! Chapter 14's types: an uncontended `Semaphore` acquire + release
//! beside an uncontended `std::sync::Mutex` lock + unlock (the goal: within
//! 2x), and a `Condition` ping-pong between two processes beside a raw
//! pipe ping-pong (the floor). Run with `cargo bench -p mpbench --bench
//! sync`.

use std::hint::black_box;
use std::sync::Mutex;
use std::time::Duration;

use course::floor;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mpcore::Semaphore;

const ROUNDS: u64 = 1_000;

fn sync(c: &mut Criterion) {
    // Check every answer once, outside the timed loops.
    assert_eq!(mpbench::semaphore_uncontended(1_000).unwrap(), 1_000);
    assert_eq!(mpbench::condition_pingpong(ROUNDS).unwrap(), ROUNDS);

    let mut group = c.benchmark_group("sync");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));

    let sem = Semaphore::new(1).unwrap();
    let mutex = Mutex::new(());
    group.throughput(Throughput::Elements(1));
    group.bench_function("mpcore Semaphore acquire + release, uncontended", |b| {
        b.iter(|| drop(black_box(&sem).acquire().unwrap()))
    });
    group.bench_function("std Mutex lock + unlock, uncontended", |b| {
        b.iter(|| drop(black_box(&mutex).lock().unwrap()))
    });

    group.throughput(Throughput::Elements(ROUNDS));
    group.bench_function("mpcore Condition ping-pong, 1,000 rounds", |b| {
        b.iter(|| mpbench::condition_pingpong(ROUNDS).unwrap())
    });
    group.bench_function("floor: pipe ping-pong, 1,000 rounds", |b| {
        b.iter(|| floor::fork_pipe_pingpong(ROUNDS).unwrap())
    });
    group.finish();
}

criterion_group!(benches, sync);
criterion_main!(benches);
