//! `Pipe`, `Connection`, `Listener`/`Client` and `wait`, with real
//! processes: a peer killed mid-send, mid-receive and before reading
//! (no hang, `Disconnected`, nothing torn), 100 MiB through a pipe, ends
//! sent to spawned and fork-server children, keys that differ, clients
//! of garbage, and `wait` over 50 connections.

use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use mpcore::connection::{Client, Listener, wait};
use mpcore::process::Builder;
use mpcore::{Connection, Error, Pipe, Process, Signal};
use testkit::within;

#[macro_use]
mod methods;

const LIMIT: Duration = Duration::from_secs(60);

/// A message of `len` bytes that says which it is: every byte is
/// `index` (mod 251), so a torn one shows.
fn numbered(index: usize, len: usize) -> Vec<u8> {
    vec![(index % 251) as u8; len]
}

fn check_numbered(index: usize, message: &[u8], len: usize) {
    assert_eq!(message.len(), len, "message {index} has the wrong length");
    assert!(
        message.iter().all(|&b| b == (index % 251) as u8),
        "message {index} is torn"
    );
}

#[test]
fn a_duplex_pipe_carries_typed_values_both_ways() {
    within(LIMIT, || {
        let (parent, child) = Pipe::new::<u32, String>().unwrap();
        let mut p = Process::spawn(move || {
            let n = child.recv().unwrap();
            child.send(&format!("got {n}")).unwrap();
            child.recv_timeout(Duration::from_secs(10)).unwrap()
        })
        .unwrap();
        parent.send(&7).unwrap();
        assert_eq!(parent.recv().unwrap(), "got 7");
        parent.send(&8).unwrap();
        assert_eq!(p.join().unwrap(), 8);
        // The child's end is gone with it: nothing more will come. (A
        // child that another test forked while this process still held
        // that end holds a copy until it exits: give it time.)
        assert!(parent.poll(Duration::from_secs(20)).unwrap());
        assert!(matches!(parent.recv(), Err(Error::Disconnected)));
        assert!(matches!(parent.send(&1), Err(Error::Disconnected)));
    });
}

#[test]
fn waiting_ends_with_timeout_or_none_and_a_zero_timeout_takes_what_is_there() {
    let (a, b) = Pipe::new::<u8, u8>().unwrap();
    assert!(!a.poll(Duration::ZERO).unwrap());
    assert!(a.try_recv().unwrap().is_none());
    let started = Instant::now();
    let e = a.recv_timeout(Duration::from_millis(50)).unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(e.to_string(), "timed out after 50ms");
    assert!(
        a.recv_bytes_timeout(Duration::ZERO)
            .unwrap_err()
            .is_timeout()
    );
    b.send(&5).unwrap();
    assert!(a.poll(Duration::ZERO).unwrap());
    assert_eq!(a.recv_timeout(Duration::ZERO).unwrap(), 5);
    b.send(&6).unwrap();
    assert_eq!(a.try_recv().unwrap(), Some(6));
}

#[test]
fn a_one_way_pipe_sends_one_way_only() {
    let (rx, tx) = Pipe::one_way::<String>().unwrap();
    tx.send(&"hello".to_string()).unwrap();
    assert_eq!(rx.recv().unwrap(), "hello");
    assert!(matches!(rx.send_bytes(b"back"), Err(Error::Disconnected)));
    drop(tx);
    assert!(matches!(rx.recv(), Err(Error::Disconnected)));
}

#[test]
fn a_value_the_other_end_could_not_read_is_refused_before_it_leaves() {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Skips {
        #[serde(skip_serializing_if = "Option::is_none")]
        a: Option<u8>,
        b: u8,
    }
    let (a, b) = Pipe::new::<Skips, Skips>().unwrap();
    let e = a.send(&Skips { a: None, b: 1 }).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Codec {
                action: "encode",
                ..
            }
        ),
        "{e}"
    );
    assert!(b.try_recv().unwrap().is_none());
}

#[test]
fn everything_sent_is_read_before_disconnected() {
    within(LIMIT, || {
        let (parent, child) = Pipe::new::<(), u64>().unwrap();
        let mut p = Process::spawn(move || {
            for i in 0..3 {
                child.send(&i).unwrap();
            }
            // A large one, through a memfd, then the child exits.
            child.send_bytes(&numbered(9, 100_000)).unwrap();
        })
        .unwrap();
        p.join().unwrap();
        for i in 0..3 {
            assert_eq!(parent.recv().unwrap(), i);
        }
        check_numbered(9, &parent.recv_bytes().unwrap(), 100_000);
        assert!(matches!(parent.recv(), Err(Error::Disconnected)));
        assert!(matches!(parent.recv_bytes(), Err(Error::Disconnected)));
        assert!(matches!(parent.try_recv(), Err(Error::Disconnected)));
    });
}

#[test]
fn a_sender_killed_mid_send_leaves_whole_messages_then_disconnected() {
    within(LIMIT, || {
        for len in [32 * 1024, 300 * 1024] {
            let (parent, child) = Pipe::new::<(), ()>().unwrap();
            let mut p = Process::spawn(move || {
                // Sends until killed: the socket fills and the child
                // waits inside send.
                for i in 0.. {
                    child.send_bytes(&numbered(i, len)).unwrap();
                }
            })
            .unwrap();
            // Let it fill the socket and block in a send.
            for i in 0..2 {
                check_numbered(i, &parent.recv_bytes().unwrap(), len);
            }
            std::thread::sleep(Duration::from_millis(100));
            p.kill().unwrap();
            assert!(matches!(
                p.join(),
                Err(Error::Signaled {
                    signal: Signal::SIGKILL,
                    ..
                })
            ));
            let mut i = 2;
            loop {
                match parent.recv_bytes() {
                    Ok(message) => check_numbered(i, &message, len),
                    Err(Error::Disconnected) => break,
                    Err(e) => panic!("message {i}: {e}"),
                }
                i += 1;
            }
            assert!(i > 2, "the killed child had sent more ({len} bytes each)");
        }
    });
}

#[test]
fn a_receiver_killed_mid_recv_makes_send_disconnected_without_sigpipe() {
    within(LIMIT, || {
        let (parent, child) = Pipe::new::<u64, u64>().unwrap();
        let mut p = Process::spawn(move || {
            child.send(&1).unwrap();
            // Blocks here until killed.
            child.recv().unwrap()
        })
        .unwrap();
        assert_eq!(parent.recv().unwrap(), 1);
        p.kill().unwrap();
        assert_eq!(p.join().unwrap_err().signal(), Some(Signal::SIGKILL));
        // This process would die of SIGPIPE here if the send raised it.
        assert!(matches!(parent.send(&2), Err(Error::Disconnected)));
        assert!(matches!(
            parent.send_bytes(&[0; 1 << 20]),
            Err(Error::Disconnected)
        ));
        assert!(matches!(parent.recv(), Err(Error::Disconnected)));
    });
}

#[test]
fn a_send_to_a_gone_peer_raises_no_sigpipe_even_where_sigpipe_kills() {
    within(LIMIT, || {
        // Rust's runtime ignores SIGPIPE; a C host or a program that
        // restores it does not. The child restores the default (death),
        // then sends, small and large, to an end that is gone.
        let mut p = Process::spawn(|| {
            // SAFETY: setting a signal's disposition to the default, in a
            // child with this one thread; no handler is involved.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            let (a, b) = Pipe::new::<u32, u32>().unwrap();
            drop(b);
            let small = a.send(&1);
            let large = a.send_bytes(&[0; 1 << 20]);
            (
                matches!(small, Err(Error::Disconnected)),
                matches!(large, Err(Error::Disconnected)),
            )
        })
        .unwrap();
        assert_eq!(p.join().unwrap(), (true, true));
    });
}

#[test]
fn a_receiver_killed_before_reading_makes_send_disconnected() {
    within(LIMIT, || {
        let (parent, child) = Pipe::new::<u64, u64>().unwrap();
        let mut p = Process::spawn(move || {
            child.send(&0).unwrap();
            std::thread::sleep(Duration::from_secs(60));
            drop(child);
        })
        .unwrap();
        assert_eq!(parent.recv().unwrap(), 0);
        for i in 0..5 {
            parent.send(&i).unwrap();
        }
        parent.send_bytes(&numbered(1, 1 << 20)).unwrap();
        p.kill().unwrap();
        assert_eq!(p.join().unwrap_err().signal(), Some(Signal::SIGKILL));
        assert!(matches!(parent.send(&9), Err(Error::Disconnected)));
        assert!(matches!(parent.recv(), Err(Error::Disconnected)));
    });
}

#[test]
fn a_hundred_mebibytes_go_through_a_pipe_whole() {
    within(LIMIT, || {
        const LEN: usize = 100 << 20;
        let (parent, child) = Pipe::new::<(), ()>().unwrap();
        let mut p = Process::spawn(move || {
            let data: Vec<u8> = (0..LEN).map(|i| (i % 253) as u8).collect();
            child.send_bytes(&data).unwrap();
            let back = child.recv_bytes().unwrap();
            back.len()
        })
        .unwrap();
        let data = parent.recv_bytes().unwrap();
        assert_eq!(data.len(), LEN);
        assert!(data.iter().enumerate().all(|(i, &b)| b == (i % 253) as u8));
        parent.send_bytes(&data).unwrap();
        assert_eq!(p.join().unwrap(), LEN);
    });
}

/// A spawned or fork-server child's task: doubles what comes until the
/// other end hangs up, and says how many it doubled.
fn doubler(c: Connection<u64, u64>) -> u64 {
    let mut n = 0;
    while let Ok(x) = c.recv() {
        c.send(&(x * 2)).unwrap();
        n += 1;
    }
    n
}

under_spawn_and_forkserver! {
    /// An end travels to a fresh program as a descriptor, and works there.
    fn an_end_travels_to_the_child_as_a_descriptor(method) {
        within(LIMIT, move || {
            let (mine, theirs) = Pipe::new::<u64, u64>().unwrap();
            let mut p = Builder::new()
                .start_method(method)
                .spawn_fn(doubler, theirs)
                .unwrap();
            for x in [1, 21, 1000] {
                mine.send(&x).unwrap();
                assert_eq!(mine.recv().unwrap(), 2 * x);
            }
            drop(mine);
            assert_eq!(p.join().unwrap(), 3);
        });
    }
}

#[test]
fn a_connection_serializes_nowhere_but_a_child_s_argument() {
    let (a, _b) = Pipe::new::<u8, u8>().unwrap();
    let q = mpcore::Queue::<Connection<u8, u8>>::new().unwrap();
    let e = q.put(a).unwrap_err();
    assert!(
        e.to_string()
            .contains("a Connection can be sent only in the argument of a spawned process"),
        "{e}"
    );
}

/// A name in the abstract namespace, unique to this test.
fn abstract_name(test: &str) -> String {
    format!("\0mpcore-test-{test}-{}", std::process::id())
}

#[test]
fn a_client_with_the_right_key_gets_in_and_a_wrong_key_is_a_clear_error() {
    within(LIMIT, || {
        let name = abstract_name("keys");
        let listener = Listener::bind_with_authkey(&name, b"right").unwrap();
        let n = name.clone();
        let mut clients = Process::spawn(move || {
            let wrong = Client::connect_with_authkey::<u8, u8>(&n, b"wrong").unwrap_err();
            let none = Client::connect::<u8, u8>(&n).unwrap_err();
            let right = Client::connect_with_authkey::<u8, u8>(&n, b"right").unwrap();
            right.send(&40).unwrap();
            let answer = right.recv().unwrap();
            (wrong.to_string(), none.to_string(), answer)
        })
        .unwrap();
        let c = listener
            .accept_timeout::<u8, u8>(Duration::from_secs(20))
            .unwrap();
        let n = c.recv().unwrap();
        c.send(&(n + 2)).unwrap();
        let (wrong, none, answer) = clients.join().unwrap();
        assert_eq!(
            wrong,
            "authentication with the other side failed: the listener refused our \
             authentication key (the two keys differ)"
        );
        assert_eq!(
            none,
            "authentication with the other side failed: the listener asks for an \
             authentication key, and this client was given none"
        );
        assert_eq!(answer, 42);
    });
}

#[test]
fn a_client_with_a_key_refuses_a_listener_without_one() {
    within(LIMIT, || {
        let name = abstract_name("keyless");
        let listener = Listener::bind(&name).unwrap();
        let n = name.clone();
        let mut client = Process::spawn(move || {
            Client::connect_with_authkey::<u8, u8>(&n, b"key")
                .unwrap_err()
                .to_string()
        })
        .unwrap();
        // The listener lets it in (it asks for nothing); the client leaves.
        let c = listener.accept::<u8, u8>().unwrap();
        assert_eq!(
            client.join().unwrap(),
            "authentication with the other side failed: the listener has no authentication \
             key, so it cannot prove that it knows ours"
        );
        assert!(matches!(c.recv(), Err(Error::Disconnected)));
    });
}

#[test]
fn clients_of_garbage_silence_or_none_do_not_stop_the_listener() {
    use nix::sys::socket::{
        AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, connect, send, socket,
    };
    within(LIMIT, || {
        let name = abstract_name("garbage");
        let mut listener = Listener::bind_with_authkey(&name, b"k").unwrap();
        listener.set_handshake_timeout(Duration::from_millis(300));
        let raw = |garbage: Option<&[u8]>| {
            let fd = socket(
                AddressFamily::Unix,
                SockType::SeqPacket,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .unwrap();
            connect(
                fd.as_raw_fd(),
                &UnixAddr::new_abstract(&name.as_bytes()[1..]).unwrap(),
            )
            .unwrap();
            if let Some(bytes) = garbage {
                send(fd.as_raw_fd(), bytes, MsgFlags::empty()).unwrap();
            }
            fd
        };
        // Garbage, then gone; gone at once; there but silent.
        drop(raw(Some(&[0xff; 64])));
        drop(raw(None));
        let silent = raw(None);
        let garbage = raw(Some(b"#CHALLENGE#hello"));
        let n = name.clone();
        let mut good = Process::spawn(move || {
            let c = Client::connect_with_authkey::<u8, u8>(&n, b"k").unwrap();
            c.recv().unwrap()
        })
        .unwrap();
        let started = Instant::now();
        let c = listener
            .accept_timeout::<u8, u8>(Duration::from_secs(20))
            .unwrap();
        c.send(&7).unwrap();
        assert_eq!(good.join().unwrap(), 7);
        // The silent one cost its handshake timeout, no more.
        assert!(started.elapsed() < Duration::from_secs(10));
        drop((silent, garbage));
        assert!(
            listener
                .accept_timeout::<u8, u8>(Duration::from_millis(100))
                .unwrap_err()
                .is_timeout()
        );
    });
}

#[test]
fn the_socket_file_is_owner_only_taken_names_fail_and_drop_removes_it() {
    use std::os::unix::fs::PermissionsExt;
    within(LIMIT, || {
        let dir = std::env::temp_dir().join(format!("mpcore-conn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("socket");
        let listener = Listener::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let e = Listener::bind(&path).unwrap_err();
        assert!(e.to_string().contains("EADDRINUSE"), "{e}");
        let p = path.clone();
        let mut client = Process::spawn(move || {
            let c = Client::connect::<u8, u8>(&p).unwrap();
            c.recv().unwrap()
        })
        .unwrap();
        listener.accept::<u8, u8>().unwrap().send(&3).unwrap();
        assert_eq!(client.join().unwrap(), 3);
        drop(listener);
        assert!(!path.exists(), "the listener's drop left its file");
        // The name is free again.
        drop(Listener::bind(&path).unwrap());
        assert!(!path.exists());
        std::fs::remove_dir(&dir).unwrap();
    });
}

#[test]
fn a_client_with_no_listener_gets_an_error_not_a_wait() {
    let e = Client::connect::<u8, u8>("/nonexistent/mpcore/socket").unwrap_err();
    assert!(e.to_string().starts_with("connect failed: ENOENT"), "{e}");
    let e = Client::connect::<u8, u8>(abstract_name("nobody")).unwrap_err();
    assert!(
        e.to_string().starts_with("connect failed: ECONNREFUSED"),
        "{e}"
    );
}

#[test]
fn a_peer_of_another_user_is_refused() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root to become another user");
        return;
    }
    within(LIMIT, || {
        let name = abstract_name("stranger");
        let listener = Listener::bind(&name).unwrap();
        let n = name.clone();
        let mut stranger = Process::spawn(move || {
            nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).unwrap();
            Client::connect::<u8, u8>(&n).unwrap_err().to_string()
        })
        .unwrap();
        let said = stranger.join().unwrap();
        assert_eq!(
            said,
            "authentication with the other side failed: the other side runs as user 0, and \
             this process as user 65534; only a peer of the same user is let in"
        );
        // The listener refused it too, and waits on.
        assert!(
            listener
                .accept_timeout::<u8, u8>(Duration::from_millis(200))
                .unwrap_err()
                .is_timeout()
        );
    });
}

#[test]
fn wait_returns_exactly_the_ready_ones_among_fifty() {
    within(LIMIT, || {
        let (mine, theirs): (Vec<_>, Vec<_>) =
            (0..50).map(|_| Pipe::new::<(), u32>().unwrap()).unzip();
        let chosen = [0usize, 3, 17, 18, 42, 49];
        let mut p = Process::spawn(move || {
            for &i in &chosen {
                theirs[i].send(&(i as u32)).unwrap();
            }
            // Holds the other ends open until killed.
            std::thread::sleep(Duration::from_secs(60));
            drop(theirs);
        })
        .unwrap();
        let ready = wait(&mine, Some(Duration::from_secs(20))).unwrap();
        // The sends may land between two looks: wait until all are there.
        let ready = if ready.len() < chosen.len() {
            std::thread::sleep(Duration::from_millis(200));
            wait(&mine, Some(Duration::ZERO)).unwrap()
        } else {
            ready
        };
        assert_eq!(ready, chosen);
        for &i in &chosen {
            assert_eq!(mine[i].recv().unwrap(), i as u32);
        }
        let none = wait(&mine, Some(Duration::from_millis(50))).unwrap();
        assert!(none.is_empty());
        // A listener with no client is not ready; mixed kinds go as dyn.
        let listener = Listener::bind(abstract_name("wait")).unwrap();
        let mixed: Vec<&dyn AsFd> = vec![&listener, &mine[0]];
        assert!(wait(&mixed, Some(Duration::ZERO)).unwrap().is_empty());
        // Killed: every end reports its peer's departure.
        p.kill().unwrap();
        assert_eq!(p.join().unwrap_err().signal(), Some(Signal::SIGKILL));
        let all = wait(&mine, Some(Duration::from_secs(20))).unwrap();
        assert_eq!(all, (0..50).collect::<Vec<_>>());
        assert!(wait::<&dyn AsFd>(&[], None).unwrap().is_empty());
    });
}

/// A peer that sends its last message and closes while the other end
/// looks without waiting: the message is read, then `Disconnected`. The
/// kernel's non-blocking receive on a packet socket can report end of
/// file with that message queued when the close falls between its two
/// looks (wire/channel.rs says how mpcore looks again); this races the
/// two thousands of times, on two threads.
#[test]
fn a_last_message_sent_just_before_close_is_never_lost_to_a_look() {
    within(LIMIT, || {
        for round in 0..20_000u64 {
            let (a, b) = Pipe::new::<u64, u64>().unwrap();
            let sender = std::thread::spawn(move || {
                b.send(&round).unwrap();
                drop(b);
            });
            let got = loop {
                match a.try_recv() {
                    Ok(Some(value)) => break value,
                    Ok(None) => std::hint::spin_loop(),
                    Err(e) => panic!("round {round}: {e} before the last message was read"),
                }
            };
            assert_eq!(got, round);
            sender.join().unwrap();
            assert!(matches!(a.recv(), Err(Error::Disconnected)));
        }
    });
}
