//! The tutorial's job (`course::job`), two of them: one after the other,
//! in 2 threads, in 2 processes, at `timing_demo`'s default size. On 2
//! cores the last two can be at most 2x faster than the first.
//! Run with `cargo bench -p mpbench --bench timing`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mpbench::TIMING_N;

fn timing(c: &mut Criterion) {
    // Check the answer once, outside the timed loops.
    let want = mpbench::timing_normal(TIMING_N);
    assert_eq!(mpbench::timing_threads(TIMING_N), want);
    assert_eq!(mpbench::timing_processes(TIMING_N).unwrap(), want);

    let mut group = c.benchmark_group("timing");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("normal (2 jobs, one after the other)", |b| {
        b.iter(|| mpbench::timing_normal(black_box(TIMING_N)))
    });
    group.bench_function("2 threads", |b| {
        b.iter(|| mpbench::timing_threads(black_box(TIMING_N)))
    });
    group.bench_function("2 processes", |b| {
        b.iter(|| mpbench::timing_processes(black_box(TIMING_N)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, timing);
criterion_main!(benches);
