//! A pool of 2 workers: `map` of 100,000 tiny tasks (default chunks), of
//! 20,000 at chunk size 1, the `apply_async(..).get()` round trip, and
//! making a pool; `mpcore::Pool` beside rayon and a plain loop.
//! Run with `cargo bench -p mpbench --bench pool`.

use std::hint::black_box;
use std::time::Duration;

use course::floor;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mpbench::tiny;
use mpcore::Pool;
use rayon::prelude::*;

const TINY: u64 = 100_000;
const CHUNK1: u64 = 20_000;
const ROUNDS: u64 = 1_000;

fn pool(c: &mut Criterion) {
    let pool = Pool::new(2).unwrap();
    let rayon = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let sequential = |n: u64| (0..n).map(|x| tiny(black_box(x))).sum::<u64>();
    let rayon_map = |n: u64| rayon.install(|| (0..n).into_par_iter().map(tiny).sum::<u64>());

    // Check every answer once, outside the timed loops.
    for n in [TINY, CHUNK1] {
        let want = mpbench::pool_map_answer(n);
        assert_eq!(mpbench::pool_map_tiny(&pool, n).unwrap(), want);
        assert_eq!(mpbench::pool_map_chunk1(&pool, n).unwrap(), want);
        assert_eq!(rayon_map(n), want);
        assert_eq!(sequential(n), want);
    }
    let rtt = mpbench::pool_map_answer(ROUNDS);
    assert_eq!(mpbench::apply_async_rtt(&pool, ROUNDS).unwrap(), rtt);

    let mut group = c.benchmark_group("pool");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));

    group.throughput(Throughput::Elements(TINY));
    group.bench_function("mpcore Pool(2).map, 100,000 tiny tasks", |b| {
        b.iter(|| mpbench::pool_map_tiny(&pool, TINY).unwrap())
    });
    group.bench_function("rayon (2 threads), 100,000 tiny tasks", |b| {
        b.iter(|| rayon_map(TINY))
    });
    group.bench_function("sequential loop, 100,000 tiny tasks", |b| {
        b.iter(|| sequential(TINY))
    });

    group.throughput(Throughput::Elements(CHUNK1));
    group.bench_function("mpcore Pool(2).map chunksize 1, 20,000 tasks", |b| {
        b.iter(|| mpbench::pool_map_chunk1(&pool, CHUNK1).unwrap())
    });
    group.bench_function("rayon (2 threads), 20,000 tasks", |b| {
        b.iter(|| rayon_map(CHUNK1))
    });

    group.throughput(Throughput::Elements(ROUNDS));
    group.bench_function("mpcore apply_async(..).get(), 1,000 round trips", |b| {
        b.iter(|| mpbench::apply_async_rtt(&pool, ROUNDS).unwrap())
    });
    group.bench_function("floor: pipe ping-pong, 1,000 rounds", |b| {
        b.iter(|| floor::fork_pipe_pingpong(ROUNDS).unwrap())
    });

    group.throughput(Throughput::Elements(1));
    group.bench_function("mpcore Pool::new(2) + drop", |b| {
        b.iter(|| drop(Pool::new(black_box(2)).unwrap()))
    });
    group.bench_function("rayon ThreadPool (2 threads) build + drop", |b| {
        b.iter(|| {
            drop(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(black_box(2))
                    .build()
                    .unwrap(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, pool);
criterion_main!(benches);
