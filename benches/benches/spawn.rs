//! What it costs to start a worker and get a value back: a process
//! (`Process::spawn` + `join`) beside a thread (`std::thread::spawn` +
//! `join`) and the floor, a raw `fork` + pipe + `waitpid`; then the same
//! under each start method, with procspawn (a fresh `exec`, like mpcore's
//! spawn) beside them, and a short pool's whole life under each method.
//! Run with `cargo bench -p mpbench --bench spawn`.
//!
//! procspawn's children are fresh runs of this program that must find
//! their way to their task: hence `procspawn::init()` first in `main`,
//! which is why this bench has a `main` of its own. (mpcore's spawned
//! children get to theirs before `main` runs.)

use std::hint::black_box;

use course::floor;
use criterion::{Criterion, criterion_group};
use mpcore::{Pool, StartMethod};

fn spawn(c: &mut Criterion) {
    // Check the answers once, outside the timed loop.
    assert_eq!(mpbench::spawn_join(41).unwrap(), 42);
    assert_eq!(floor::fork_pipe_waitpid(41).unwrap(), 42);

    let mut group = c.benchmark_group("spawn");
    group.bench_function("mpcore Process::spawn + join (u64)", |b| {
        b.iter(|| mpbench::spawn_join(black_box(41)).unwrap())
    });
    group.bench_function("std::thread::spawn + join (u64)", |b| {
        b.iter(|| {
            let x = black_box(41u64);
            std::thread::spawn(move || x + 1).join().unwrap()
        })
    });
    group.bench_function("floor: fork + pipe + waitpid (u64)", |b| {
        b.iter(|| floor::fork_pipe_waitpid(black_box(41)).unwrap())
    });
    group.finish();
}

fn start_methods(c: &mut Criterion) {
    let methods = [
        StartMethod::Fork,
        StartMethod::Spawn,
        StartMethod::ForkServer,
    ];
    let mut group = c.benchmark_group("start_methods");
    for method in methods {
        let answer =
            mpbench::spawn_join_with(method, 41).unwrap_or_else(|e| panic!("{method}: {e}"));
        assert_eq!(answer, 42, "{method}");
        group.bench_function(format!("mpcore {method}: spawn_fn + join (u64)"), |b| {
            b.iter(|| mpbench::spawn_join_with(method, black_box(41)).unwrap())
        });
    }
    let procspawn_join = |x: u64| procspawn::spawn(x, mpbench::plus_one).join().unwrap();
    assert_eq!(procspawn_join(41), 42);
    group.bench_function("procspawn: spawn + join (u64)", |b| {
        b.iter(|| procspawn_join(black_box(41)))
    });

    // A short pool's whole life (Pool(2), a map of 10 tiny tasks, close,
    // join), and one apply_async round trip on a running pool.
    pool_rows(&mut group, StartMethod::Fork, || Pool::new(2));
    for method in [StartMethod::Spawn, StartMethod::ForkServer] {
        pool_rows(&mut group, method, move || mpbench::pool2(method));
    }
    group.finish();
}

fn pool_rows(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    method: StartMethod,
    start: impl Fn() -> mpcore::Result<Pool>,
) {
    assert_eq!(mpbench::pool_map10(start().unwrap()).unwrap(), 90);
    group.bench_function(format!("mpcore {method}: Pool(2) + map 10 + close"), |b| {
        b.iter(|| mpbench::pool_map10(start().unwrap()).unwrap())
    });
    let pool = start().unwrap();
    assert_eq!(mpbench::apply_async_rtt(&pool, 10).unwrap(), 90);
    group.bench_function(format!("mpcore {method}: apply_async(..).get()"), |b| {
        b.iter(|| {
            pool.apply_async(mpbench::tiny, black_box(21))
                .unwrap()
                .get()
                .unwrap()
        })
    });
}

criterion_group!(benches, spawn, start_methods);

fn main() {
    procspawn::init();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
