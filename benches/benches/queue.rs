//! Messages between two processes: 100,000 small ones child to parent,
//! 1 MiB ones (MB/s), and a ping-pong round trip; `mpcore::Queue` beside
//! `std::sync::mpsc` between threads, a raw `ipc-channel`, and a raw pipe
//! (the floor). Run with `cargo bench -p mpbench --bench queue`.

use std::hint::black_box;
use std::sync::mpsc;
use std::time::Duration;

use course::floor;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipc_channel::ipc;
use mpbench::MIB;
use mpcore::Process;

const SMALL: u64 = 100_000;
const LARGE: u64 = 20;
const ROUNDS: u64 = 1_000;

fn mpsc_small(n: u64) -> u64 {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        for i in 0..n {
            tx.send(black_box(i)).unwrap();
        }
    });
    let sum = rx.iter().take(n as usize).sum();
    t.join().unwrap();
    sum
}

fn ipc_small(n: u64) -> u64 {
    let (tx, rx) = ipc::channel::<u64>().unwrap();
    let mut child = Process::spawn(move || {
        for i in 0..n {
            tx.send(black_box(i)).unwrap();
        }
    })
    .unwrap();
    let sum = (0..n).map(|_| rx.recv().unwrap()).sum();
    child.join().unwrap();
    sum
}

fn mpsc_large(count: u64) -> u64 {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let t = std::thread::spawn(move || {
        for _ in 0..count {
            tx.send(vec![7u8; MIB]).unwrap();
        }
    });
    let total = rx.iter().take(count as usize).map(|m| m.len() as u64).sum();
    t.join().unwrap();
    total
}

fn ipc_large(count: u64) -> u64 {
    let (tx, rx) = ipc::bytes_channel().unwrap();
    let mut child = Process::spawn(move || {
        let message = vec![7u8; MIB];
        for _ in 0..count {
            tx.send(black_box(&message)).unwrap();
        }
    })
    .unwrap();
    let total = (0..count).map(|_| rx.recv().unwrap().len() as u64).sum();
    child.join().unwrap();
    total
}

fn mpsc_pingpong(rounds: u64) -> u64 {
    let (ping_tx, ping_rx) = mpsc::channel::<u64>();
    let (pong_tx, pong_rx) = mpsc::channel::<u64>();
    let t = std::thread::spawn(move || {
        for x in ping_rx.iter().take(rounds as usize) {
            pong_tx.send(x + 1).unwrap();
        }
    });
    let mut sum = 0;
    for i in 0..rounds {
        ping_tx.send(i).unwrap();
        sum += pong_rx.recv().unwrap();
    }
    t.join().unwrap();
    sum
}

fn queue(c: &mut Criterion) {
    // Check every answer once, outside the timed loops.
    let small = mpbench::queue_small_answer(SMALL);
    assert_eq!(mpbench::queue_small(SMALL).unwrap(), small);
    assert_eq!(mpsc_small(SMALL), small);
    assert_eq!(ipc_small(SMALL), small);
    assert_eq!(mpbench::queue_1mib(LARGE).unwrap(), LARGE * MIB as u64);
    assert_eq!(mpsc_large(LARGE), LARGE * MIB as u64);
    assert_eq!(ipc_large(LARGE), LARGE * MIB as u64);
    let pp = ROUNDS * (ROUNDS + 1) / 2;
    assert_eq!(mpbench::queue_pingpong(ROUNDS).unwrap(), pp);
    assert_eq!(mpsc_pingpong(ROUNDS), pp);

    let mut group = c.benchmark_group("queue");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));

    group.throughput(Throughput::Elements(SMALL));
    group.bench_function("mpcore Queue<u64>, 100,000 child to parent", |b| {
        b.iter(|| mpbench::queue_small(SMALL).unwrap())
    });
    group.bench_function("std mpsc, 100,000 thread to thread", |b| {
        b.iter(|| mpsc_small(SMALL))
    });
    group.bench_function("raw ipc-channel, 100,000 child to parent", |b| {
        b.iter(|| ipc_small(SMALL))
    });
    group.bench_function("floor: pipe, 100,000 x 8 bytes", |b| {
        b.iter(|| floor::fork_pipe_stream(SMALL as usize, 8).unwrap())
    });

    group.throughput(Throughput::Bytes(LARGE * MIB as u64));
    group.bench_function("mpcore Queue put_bytes/get_bytes, 20 x 1 MiB", |b| {
        b.iter(|| mpbench::queue_1mib(LARGE).unwrap())
    });
    group.bench_function("std mpsc Vec<u8>, 20 x 1 MiB", |b| {
        b.iter(|| mpsc_large(LARGE))
    });
    group.bench_function("raw ipc-channel bytes, 20 x 1 MiB", |b| {
        b.iter(|| ipc_large(LARGE))
    });
    group.bench_function("floor: pipe, 20 x 1 MiB", |b| {
        b.iter(|| floor::fork_pipe_stream(LARGE as usize, MIB).unwrap())
    });

    group.throughput(Throughput::Elements(ROUNDS));
    group.bench_function("mpcore Queue ping-pong, 1,000 rounds", |b| {
        b.iter(|| mpbench::queue_pingpong(ROUNDS).unwrap())
    });
    group.bench_function("std mpsc ping-pong, 1,000 rounds", |b| {
        b.iter(|| mpsc_pingpong(ROUNDS))
    });
    group.bench_function("floor: pipe ping-pong, 1,000 rounds", |b| {
        b.iter(|| floor::fork_pipe_pingpong(ROUNDS).unwrap())
    });
    group.finish();
}

criterion_group!(benches, queue);
criterion_main!(benches);
