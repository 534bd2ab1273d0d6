//! With the `tokio` feature: `recv_async`, `send_async` and
//! `accept_async` on one runtime thread, against real children.
//! (`cargo test -p mpcore-tests --test connection_async`: the test crate
//! builds mpcore with its `tokio` feature.)

use std::time::Duration;

use mpcore::connection::{Client, Listener};
use mpcore::{Error, Pipe, Process};
use testkit::within;

const LIMIT: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn one_thread_serves_many_children_s_pipes() {
    within(LIMIT, || {
        let mut children = Vec::new();
        let mut ends = Vec::new();
        for i in 0..20u64 {
            let (mine, theirs) = Pipe::new::<u64, u64>().unwrap();
            children.push(
                Process::spawn(move || {
                    // Later children answer later: the awaits interleave.
                    std::thread::sleep(Duration::from_millis(10 * (20 - i)));
                    theirs.send(&i).unwrap();
                    theirs.recv().unwrap()
                })
                .unwrap(),
            );
            ends.push(mine);
        }
        let sums = runtime().block_on(async move {
            let tasks: Vec<_> = ends
                .into_iter()
                .map(|end| {
                    tokio::spawn(async move {
                        let i = end.recv_async().await.unwrap();
                        end.send_async(&(i + 100)).await.unwrap();
                        // The child exits after its answer: end of file.
                        let gone = end.recv_async().await;
                        (i, matches!(gone, Err(Error::Disconnected)))
                    })
                })
                .collect();
            let mut out = Vec::new();
            for task in tasks {
                out.push(task.await.unwrap());
            }
            out
        });
        for (i, (got, disconnected)) in sums.into_iter().enumerate() {
            assert_eq!(got, i as u64);
            assert!(disconnected, "child {i}'s end did not report its exit");
        }
        for (i, mut child) in children.into_iter().enumerate() {
            assert_eq!(child.join().unwrap(), i as u64 + 100);
        }
    });
}

#[test]
fn send_async_waits_for_a_full_socket_to_drain() {
    within(LIMIT, || {
        let (mine, theirs) = Pipe::new::<Vec<u8>, ()>().unwrap();
        let mut child = Process::spawn(move || {
            // Starts reading only after the parent has filled the socket.
            std::thread::sleep(Duration::from_millis(300));
            // (Not until end of file: a forked child holds a copy of its
            // parent's end too, as in Python.)
            (0..100)
                .map(|_| theirs.recv_bytes().unwrap().len())
                .sum::<usize>()
        })
        .unwrap();
        runtime().block_on(async move {
            for _ in 0..100 {
                mine.send_async(&vec![1u8; 20_000]).await.unwrap();
            }
        });
        // Each message is its encoding: a length prefix of 3 bytes.
        assert_eq!(child.join().unwrap(), 100 * 20_003);
    });
}

#[test]
fn accept_async_takes_clients_as_they_come() {
    within(LIMIT, || {
        let name = format!("\0mpcore-async-{}", std::process::id());
        let listener = Listener::bind_with_authkey(&name, b"k").unwrap();
        let mut clients: Vec<_> = (0..5u32)
            .map(|i| {
                let n = name.clone();
                Process::spawn(move || {
                    let c = Client::connect_with_authkey::<u32, u32>(&n, b"k").unwrap();
                    c.send(&i).unwrap();
                    c.recv().unwrap()
                })
                .unwrap()
            })
            .collect();
        let mut seen = runtime().block_on(async move {
            let mut seen = Vec::new();
            for _ in 0..5 {
                let c = tokio::time::timeout(
                    Duration::from_secs(20),
                    listener.accept_async::<u32, u32>(),
                )
                .await
                .expect("a client within 20 s")
                .unwrap();
                let i = c.recv_async().await.unwrap();
                c.send_async(&(i * 10)).await.unwrap();
                seen.push(i);
            }
            seen
        });
        seen.sort();
        assert_eq!(seen, [0, 1, 2, 3, 4]);
        for (i, c) in clients.iter_mut().enumerate() {
            assert_eq!(c.join().unwrap(), i as u32 * 10);
        }
    });
}
