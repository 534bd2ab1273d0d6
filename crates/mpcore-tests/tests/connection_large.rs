//! A `Connection`'s large messages, which go through memfds that the
//! sender keeps and writes again once its receiver has read them: whole
//! and exactly once with copies of both ends in several processes, whole
//! after a receiver or a sender is killed mid-stream, no descriptor and no name in
//! `/dev/shm` left, `NoFreeDescriptor` for a receiver with no room, ends
//! that travel to spawned and fork-server children, and the async forms.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use mpcore::process::Builder;
use mpcore::{Connection, Error, Pipe, Process, Signal};
use testkit::within;

#[macro_use]
mod methods;

const LIMIT: Duration = Duration::from_secs(60);

/// A message that says which it is: its first 8 bytes are `id`, every
/// other byte is `id` (mod 251), so a torn or mixed-up one shows. Its
/// length varies with `id`, from about 68 KiB to about 2.5 MiB.
fn message(id: u64) -> Vec<u8> {
    // Every one over the 64 KiB that travel inside a packet.
    let len = 70_000 + (id as usize * 7919) % (2_500_000);
    let mut bytes = vec![(id % 251) as u8; len];
    bytes[..8].copy_from_slice(&id.to_le_bytes());
    bytes
}

/// Sends each message of `ids` on `tx` and checks that `rx` gets it whole,
/// one at a time.
fn round_trips(tx: &Connection<(), ()>, rx: &Connection<(), ()>, ids: std::ops::Range<u64>) {
    for id in ids {
        tx.send_bytes(&message(id)).unwrap();
        assert_eq!(id_of(&rx.recv_bytes().unwrap()), id);
    }
}

/// The id of a message made by [`message`], after checking it is whole.
fn id_of(bytes: &[u8]) -> u64 {
    let id = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    assert_eq!(bytes, message(id), "message {id} is torn");
    id
}

#[test]
fn copies_of_both_ends_in_several_processes_get_every_message_whole_once() {
    within(LIMIT, || {
        let (tx, rx) = Pipe::new::<(), ()>().unwrap();
        let (tx, rx) = (Arc::new(tx), Arc::new(rx));
        // Messages sent and read here first: the memfds the children's
        // copies of both ends inherit are in use already.
        round_trips(&tx, &rx, 0..20);
        let receivers: Vec<_> = (0..2)
            .map(|_| {
                let rx = Arc::clone(&rx);
                Process::spawn(move || {
                    let mut ids = Vec::new();
                    loop {
                        let bytes = rx.recv_bytes_timeout(Duration::from_secs(20)).unwrap();
                        if bytes.is_empty() {
                            return ids;
                        }
                        ids.push(id_of(&bytes));
                    }
                })
                .unwrap()
            })
            .collect();
        let senders: Vec<_> = (1..=3u64)
            .map(|child| {
                let tx = Arc::clone(&tx);
                Process::spawn(move || {
                    for i in 0..60 {
                        tx.send_bytes(&message(child * 1000 + i)).unwrap();
                    }
                })
                .unwrap()
            })
            .collect();
        for i in 0..60 {
            tx.send_bytes(&message(4000 + i)).unwrap();
        }
        for mut sender in senders {
            sender.join().unwrap();
        }
        // One empty message stops each receiver.
        tx.send_bytes(&[]).unwrap();
        tx.send_bytes(&[]).unwrap();
        let mut seen = BTreeSet::new();
        for mut receiver in receivers {
            for id in receiver.join().unwrap() {
                assert!(seen.insert(id), "message {id} arrived twice");
            }
        }
        let sent: BTreeSet<u64> = (1..=4)
            .flat_map(|s| (0..60).map(move |i| s * 1000 + i))
            .collect();
        assert_eq!(seen, sent);
    });
}

#[test]
fn a_receiver_killed_mid_stream_costs_at_most_what_it_took() {
    within(LIMIT, || {
        let (tx, rx) = Pipe::new::<(), ()>().unwrap();
        let rx = Arc::new(rx);
        let child_rx = Arc::clone(&rx);
        // Reads (and copies out) until it is killed.
        let mut child = Process::spawn(move || {
            while let Ok(bytes) = child_rx.recv_bytes() {
                id_of(&bytes);
            }
        })
        .unwrap();
        for id in 0..100 {
            tx.send_bytes(&message(id)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        child.kill().unwrap();
        assert_eq!(child.join().unwrap_err().signal(), Some(Signal::SIGKILL));
        // What the child did not take is here, whole and in order; then
        // the sender goes on, with the memfds the child may have left
        // taken for good not written again.
        let mut last = None;
        while rx.poll(Duration::ZERO).unwrap() {
            let id = id_of(&rx.recv_bytes().unwrap());
            assert!(last < Some(id), "{id} came after {last:?}");
            last = Some(id);
        }
        round_trips(&tx, &rx, 100..200);
    });
}

#[test]
fn a_sender_killed_mid_message_leaves_the_other_copies_of_its_end_working() {
    within(LIMIT, || {
        let (tx, rx) = Pipe::new::<(), ()>().unwrap();
        let tx = Arc::new(tx);
        // The child's copy of the end inherits memfds in use.
        round_trips(&tx, &rx, 0..5);
        let child_tx = Arc::clone(&tx);
        let mut child = Process::spawn(move || {
            for id in 1000..1040 {
                child_tx.send_bytes(&message(id)).unwrap();
            }
            std::thread::sleep(Duration::from_secs(60));
        })
        .unwrap();
        // Killed while it sends, most likely mid-copy.
        for id in 1000..1010 {
            assert_eq!(id_of(&rx.recv_bytes().unwrap()), id);
        }
        child.kill().unwrap();
        assert_eq!(child.join().unwrap_err().signal(), Some(Signal::SIGKILL));
        // What it had sent is whole and in order; this copy goes on.
        let mut next = 1010;
        while rx.poll(Duration::ZERO).unwrap() {
            assert_eq!(id_of(&rx.recv_bytes().unwrap()), next);
            next += 1;
        }
        round_trips(&tx, &rx, 0..50);
    });
}

#[test]
fn no_descriptor_and_no_name_is_left_and_a_sender_keeps_a_bounded_few() {
    within(LIMIT, || {
        let shm_before = testkit::dev_shm_entries();
        // In a child of its own: this test binary's other threads open
        // descriptors of their own meanwhile.
        let mut p = Process::spawn(|| {
            let before = testkit::open_fds();
            let (a, b) = Pipe::new::<Vec<u8>, Vec<u8>>().unwrap();
            // 100 large messages that nobody reads yet: the sender makes
            // new memfds, keeps a bounded few, and waits for no reader.
            for id in 0..100 {
                a.send_bytes(&message(id % 10)).unwrap();
            }
            let held = testkit::open_fds() - before - 2;
            for id in 0..100 {
                assert_eq!(id_of(&b.recv_bytes().unwrap()), id % 10);
            }
            // Typed values both ways, through the kept memfds.
            for n in 0..20 {
                a.send(&message(n)).unwrap();
                b.send(&b.recv().unwrap()).unwrap();
                assert_eq!(id_of(&a.recv().unwrap()), n);
            }
            drop((a, b));
            (held, testkit::open_fds() - before)
        })
        .unwrap();
        let (held, left) = p.join().unwrap();
        assert!((1..=16).contains(&held), "the sender held {held} memfds");
        assert_eq!(left, 0, "descriptors left open");
        assert_eq!(testkit::dev_shm_entries(), shm_before);
    });
}

#[test]
fn a_receiver_with_no_free_descriptor_is_told_so_and_reads_the_next() {
    within(LIMIT, || {
        let (tx, rx) = Pipe::new::<(), ()>().unwrap();
        // The memfds are in use already when the receiver runs out.
        tx.send_bytes(&message(1)).unwrap();
        assert_eq!(id_of(&rx.recv_bytes().unwrap()), 1);
        let mut p = Process::spawn(move || {
            use nix::sys::resource::{Resource, getrlimit, setrlimit};
            let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
            setrlimit(Resource::RLIMIT_NOFILE, 256.min(hard), hard).unwrap();
            let mut files = Vec::new();
            while let Ok(file) = std::fs::File::open("/dev/null") {
                files.push(file);
            }
            let full = rx.recv_bytes().map(|m| m.len()).map_err(|e| e.to_string());
            drop(files);
            (
                full,
                rx.recv_bytes()
                    .map(|m| id_of(&m))
                    .map_err(|e| e.to_string()),
            )
        })
        .unwrap();
        tx.send_bytes(&message(2)).unwrap();
        tx.send_bytes(&message(3)).unwrap();
        let (full, next) = p.join().unwrap();
        let lost = Error::NoFreeDescriptor {
            bytes: message(2).len() as u64,
            kept: false,
        };
        assert_eq!(full, Err(lost.to_string()));
        assert_eq!(next.unwrap(), 3);
    });
}

/// A spawned or fork-server child's task: sends back every large value
/// that comes, reversed, until the other end hangs up; says how many.
fn reverser(c: Connection<Vec<u8>, Vec<u8>>) -> u64 {
    let mut n = 0;
    while let Ok(mut bytes) = c.recv() {
        bytes.reverse();
        c.send(&bytes).unwrap();
        n += 1;
    }
    n
}

under_spawn_and_forkserver! {
    /// An end that travelled as a descriptor sends and receives large
    /// values through kept memfds both ways.
    fn an_end_in_a_fresh_program_carries_large_values_both_ways(method) {
        within(LIMIT, move || {
            let (mine, theirs) = Pipe::new::<Vec<u8>, Vec<u8>>().unwrap();
            let mut p = Builder::new()
                .start_method(method)
                .spawn_fn(reverser, theirs)
                .unwrap();
            for id in 0..20 {
                let sent = message(id);
                mine.send(&sent).unwrap();
                let mut back = mine.recv().unwrap();
                back.reverse();
                assert_eq!(back, sent);
            }
            drop(mine);
            assert_eq!(p.join().unwrap(), 20);
        });
    }
}

#[test]
fn the_async_forms_carry_large_messages_both_ways() {
    within(LIMIT, || {
        let (mine, theirs) = Pipe::new::<Vec<u8>, Vec<u8>>().unwrap();
        // A forked child holds a copy of the parent's end too: it stops
        // on a count, not at end of file.
        let mut child = Process::spawn(move || {
            for _ in 0..30 {
                let mut bytes = theirs.recv().unwrap();
                bytes.reverse();
                theirs.send(&bytes).unwrap();
            }
            theirs.send_bytes(&message(99)).unwrap();
        })
        .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            for id in 0..30 {
                let sent = message(id);
                mine.send_async(&sent).await.unwrap();
                let mut back = mine.recv_async().await.unwrap();
                back.reverse();
                assert_eq!(back, sent);
            }
            assert_eq!(id_of(&mine.recv_bytes_async().await.unwrap()), 99);
        });
        child.join().unwrap();
    });
}
