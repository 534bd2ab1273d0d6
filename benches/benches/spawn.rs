//! What it costs to start a worker and get a value back: a process
//! (`Process::spawn` + `join`) beside a thread (`std::thread::spawn` +
//! `join`). Run with `cargo bench -p mpbench --bench spawn`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mpcore::Process;

fn spawn(c: &mut Criterion) {
    // Check the answer once, outside the timed loop.
    assert_eq!(Process::spawn(|| 41u64 + 1).unwrap().join().unwrap(), 42);

    let mut group = c.benchmark_group("spawn");
    group.bench_function("mpcore Process::spawn + join (u64)", |b| {
        b.iter(|| {
            let x = black_box(41u64);
            Process::spawn(move || x + 1).unwrap().join().unwrap()
        })
    });
    group.bench_function("std::thread::spawn + join (u64)", |b| {
        b.iter(|| {
            let x = black_box(41u64);
            std::thread::spawn(move || x + 1).join().unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, spawn);
criterion_main!(benches);
