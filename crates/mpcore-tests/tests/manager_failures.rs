//! A manager's failures are errors, never hangs: a killed server, a
//! killed owner, a client killed mid-request, a value that cannot be
//! encoded, an update that panics, a call that times out. Every test runs
//! under a deadline.

use std::time::{Duration, Instant};

use mpcore::{Error, Manager, Process, StartMethod};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize, Serializer};
use testkit::{dev_shm_entries, wait_until_ended, within};

#[macro_use]
mod methods;

const LIMIT: Duration = Duration::from_secs(120);
const HELPER: &str = env!("CARGO_BIN_EXE_mpcore-test-helper");

fn add_one(n: Option<u64>) -> Option<u64> {
    Some(n.unwrap_or(0) + 1)
}

/// An update that takes its time in the server.
fn slow_add_one(n: Option<u64>) -> Option<u64> {
    std::thread::sleep(Duration::from_millis(400));
    Some(n.unwrap_or(0) + 1)
}

fn panics(_: Option<u64>) -> Option<u64> {
    panic!("no update today");
}

under_every_method! {
    /// The server killed with SIGKILL while clients use it: every call of
    /// every proxy, in every process, fails with `ManagerLost`, nobody
    /// hangs, and nothing is left running or in /dev/shm.
    fn a_killed_manager_makes_every_proxy_call_fail(method) {
        within(LIMIT, move || {
            let shm_before = dev_shm_entries();
            let manager = Manager::with_start_method(method).unwrap();
            let counts = manager.dict::<u8, u64>().unwrap();
            let list = manager.list([1u8]).unwrap();
            let children: Vec<_> = (0..3)
                .map(|_| {
                    let counts = counts.clone();
                    Process::spawn(move || loop {
                        if let Err(e) = counts.update_with(&0, add_one) {
                            return e.to_string();
                        }
                    })
                    .unwrap()
                })
                .collect();
            // The children are counting.
            while counts.get(&0).unwrap().unwrap_or(0) < 100 {
                std::thread::sleep(Duration::from_millis(5));
            }
            let server = manager.pid();
            kill(Pid::from_raw(server), Signal::SIGKILL).unwrap();
            let lost = Error::ManagerLost.to_string();
            for mut child in children {
                assert_eq!(child.join().unwrap(), lost);
            }
            assert!(matches!(counts.get(&0), Err(Error::ManagerLost)));
            assert!(matches!(list.push(2), Err(Error::ManagerLost)));
            assert!(matches!(counts.clone().len(), Err(Error::ManagerLost)));
            assert!(matches!(manager.dict::<u8, u8>(), Err(Error::ManagerLost)));
            // A child that gets the proxy only now connects anew: lost too.
            let late = counts.clone();
            let mut child = Process::spawn(move || late.len().map_err(|e| e.to_string())).unwrap();
            assert_eq!(child.join().unwrap(), Err(lost));
            drop(manager);
            assert!(wait_until_ended(server, Duration::from_secs(10)));
            assert_eq!(dev_shm_entries(), shm_before);
        });
    }

    /// The owner of the manager killed with SIGKILL: the server goes too.
    fn the_manager_dies_with_its_killed_owner(method) {
        let name = format!("{method:?}").to_lowercase();
        let (ended, server) =
            testkit::child_dies_with_killed_parent(HELPER, &["manager-orphan", &name]);
        assert!(ended, "the manager's server {server} outlived its killed owner");
    }
}

#[test]
fn dropping_the_manager_ends_its_server_and_its_proxies() {
    within(LIMIT, || {
        let manager = Manager::new().unwrap();
        let d = manager.dict::<u8, u8>().unwrap();
        d.insert(1, 1).unwrap();
        let server = manager.pid();
        drop(manager);
        assert!(wait_until_ended(server, Duration::from_secs(10)));
        let e = d.get(&1).unwrap_err();
        assert!(matches!(e, Error::ManagerLost), "{e}");
        assert_eq!(
            e.to_string(),
            "the manager's server process is gone (its Manager was dropped, the process that \
             started it ended, or it was killed), so the objects it held are lost"
        );
    });
}

#[test]
fn a_client_killed_mid_request_disturbs_nobody() {
    within(LIMIT, || {
        let manager = Manager::new().unwrap();
        let counts = manager.dict::<String, u64>().unwrap();
        let theirs = counts.clone();
        // A client whose request is in the server when it dies.
        let victim = Process::spawn(move || {
            theirs
                .update_with(&"slow".to_owned(), slow_add_one)
                .unwrap();
        })
        .unwrap();
        let others = counts.clone();
        let mut worker = Process::spawn(move || {
            for _ in 0..2000 {
                others.update_with(&"fast".to_owned(), add_one).unwrap();
            }
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(150));
        victim.kill().unwrap();
        worker.join().unwrap();
        assert_eq!(counts.get(&"fast".to_owned()).unwrap(), Some(2000));
        // The request of the killed client ran whole, or not at all.
        let slow = counts.with_timeout(Duration::from_secs(5));
        assert!(matches!(
            slow.get(&"slow".to_owned()).unwrap(),
            None | Some(1)
        ));
        // And the server takes new clients.
        let d = counts.clone();
        let mut late =
            Process::spawn(move || d.update_with(&"late".to_owned(), add_one).unwrap()).unwrap();
        assert_eq!(late.join().unwrap(), Some(1));
    });
}

/// A value whose `Serialize` fails with its own words.
#[derive(Debug)]
struct Refuses;

impl Serialize for Refuses {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this value stays home"))
    }
}

impl<'de> Deserialize<'de> for Refuses {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|()| Refuses)
    }
}

/// A value whose `Serialize` panics.
#[derive(Debug)]
struct Panics;

impl Serialize for Panics {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("serialize exploded")
    }
}

impl<'de> Deserialize<'de> for Panics {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|()| Panics)
    }
}

#[test]
fn a_value_that_cannot_be_encoded_fails_that_call_alone() {
    within(LIMIT, || {
        let manager = Manager::new().unwrap();
        let refuses = manager.dict::<u8, Refuses>().unwrap();
        let e = refuses.insert(1, Refuses).unwrap_err();
        assert!(matches!(e, Error::Codec { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "could not encode a message: this value stays home"
        );
        let panicky = manager.list::<Panics>([]).unwrap();
        let e = panicky.push(Panics).unwrap_err();
        assert_eq!(
            e.to_string(),
            "could not encode a message: the value panicked while it was being serialized: \
             serialize exploded"
        );
        let e = manager.namespace(Panics).unwrap_err();
        assert!(matches!(e, Error::Codec { .. }), "{e}");
        // Nothing was sent, and the manager goes on.
        assert_eq!(refuses.len().unwrap(), 0);
        assert_eq!(panicky.len().unwrap(), 0);
        let d = manager.dict::<u8, u8>().unwrap();
        d.insert(1, 2).unwrap();
        assert_eq!(d.get(&1).unwrap(), Some(2));
    });
}

#[test]
fn an_update_that_panics_changes_nothing_and_fails_that_call_alone() {
    within(LIMIT, || {
        // Spawned: a forked server would be a copy of this test process,
        // where other tests' threads panic (on purpose) at any time, and a
        // panic in a child forked while another thread was printing one
        // waits for ever on std's lock of that printing (the fork-with-
        // threads hazard of the crate docs).
        let manager = Manager::with_start_method(StartMethod::Spawn).unwrap();
        let d = manager.dict::<u8, u64>().unwrap();
        d.insert(0, 7).unwrap();
        let e = d.update_with(&0, panics).unwrap_err();
        assert_eq!(
            e.to_string(),
            "could not run the update of a message: it panicked in the manager, which changed \
             nothing: no update today"
        );
        assert_eq!(d.get(&0).unwrap(), Some(7));
        assert_eq!(d.update_with(&0, add_one).unwrap(), Some(8));
    });
}

#[test]
fn a_call_with_a_timeout_gives_up_and_the_proxy_goes_on() {
    within(LIMIT, || {
        let manager = Manager::new().unwrap();
        let d = manager.dict::<u8, u64>().unwrap();
        let hasty = d.with_timeout(Duration::from_millis(50));
        let start = Instant::now();
        let e = hasty.update_with(&0, slow_add_one).unwrap_err();
        assert!(
            matches!(e, Error::Timeout(t) if t == Duration::from_millis(50)),
            "{e}"
        );
        assert!(start.elapsed() < Duration::from_millis(350));
        // The server did it all the same; the next call waits its turn and
        // reads its own reply, not the late one.
        assert_eq!(d.update_with(&0, add_one).unwrap(), Some(2));
        assert_eq!(hasty.get(&0).unwrap(), Some(2));
        // A zero timeout still looks once.
        let e = d
            .with_timeout(Duration::ZERO)
            .update_with(&0, slow_add_one)
            .unwrap_err();
        assert!(e.is_timeout(), "{e}");
    });
}

#[test]
fn a_proxy_in_a_pool_task_s_argument_says_where_it_may_go() {
    within(LIMIT, || {
        let manager = Manager::new().unwrap();
        let d = manager.dict::<u8, u8>().unwrap();
        let pool = mpcore::Pool::new(1).unwrap();
        let e = pool
            .apply(|d: mpcore::Dict<u8, u8>| d.len().unwrap(), d)
            .unwrap_err();
        assert!(matches!(e, Error::Codec { .. }), "{e}");
        assert!(
            e.to_string().contains("a manager proxy can be sent only"),
            "{e}"
        );
    });
}

#[test]
fn a_manager_started_by_spawn_has_no_copy_of_the_program_s_memory() {
    within(LIMIT, || {
        let manager = Manager::with_start_method(StartMethod::Spawn).unwrap();
        let l = manager.list(["a".to_owned()]).unwrap();
        l.push("b".into()).unwrap();
        assert_eq!(l.to_vec().unwrap(), ["a", "b"]);
    });
}
