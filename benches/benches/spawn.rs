//! What it costs to start a worker and get a value back: a process
//! (`Process::spawn` + `join`) beside a thread (`std::thread::spawn` +
//! `join`) and the floor, a raw `fork` + pipe + `waitpid`.
//! Run with `cargo bench -p mpbench --bench spawn`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mpcore::floor;

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

criterion_group!(benches, spawn);
criterion_main!(benches);
