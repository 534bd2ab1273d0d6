//! The manager: its dict, list and namespace used from many processes,
//! started by every method, and the atomic update. Failures are in
//! `manager_failures.rs`. Every test runs under a deadline.

use std::sync::OnceLock;
use std::time::Duration;

use mpcore::{Dict, Error, List, Manager, Namespace, Pool, Process, StartMethod};
use serde::{Deserialize, Serialize};
use testkit::within;

#[macro_use]
mod methods;

const LIMIT: Duration = Duration::from_secs(180);

fn add_one(n: Option<u64>) -> Option<u64> {
    Some(n.unwrap_or(0) + 1)
}

#[test]
fn eight_processes_of_ten_thousand_update_with_each_end_at_exactly_80000() {
    within(LIMIT, || {
        let manager = Manager::with_start_method(StartMethod::Fork).unwrap();
        let counts = manager.dict::<String, u64>().unwrap();
        let children: Vec<_> = (0..8)
            .map(|_| {
                let counts = counts.clone();
                Process::spawn(move || {
                    let key = "hits".to_owned();
                    for _ in 0..10_000 {
                        counts.update_with(&key, add_one).unwrap();
                    }
                })
                .unwrap()
            })
            .collect();
        for mut child in children {
            child.join().unwrap();
        }
        assert_eq!(counts.get(&"hits".to_owned()).unwrap(), Some(80_000));
    });
}

#[test]
fn a_dict_does_what_python_s_does() {
    within(LIMIT, || {
        let manager = Manager::new().unwrap();
        let d = manager.dict::<String, i32>().unwrap();
        assert!(d.is_empty().unwrap());
        assert_eq!(d.insert("b".into(), 2).unwrap(), None);
        assert_eq!(d.insert("b".into(), 3).unwrap(), Some(2));
        d.update([("a".to_owned(), 1), ("c".to_owned(), 5)])
            .unwrap();
        assert_eq!(d.len().unwrap(), 3);
        assert!(d.contains_key(&"a".into()).unwrap());
        assert!(!d.contains_key(&"z".into()).unwrap());
        assert_eq!(d.keys().unwrap(), ["a", "b", "c"]);
        assert_eq!(d.values().unwrap(), [1, 3, 5]);
        assert_eq!(d.remove(&"c".into()).unwrap(), Some(5));
        assert_eq!(d.remove(&"c".into()).unwrap(), None);
        assert_eq!(
            d.items().unwrap(),
            [("a".to_owned(), 1), ("b".to_owned(), 3)]
        );
        // `None` from the update removes the entry.
        assert_eq!(d.update_with(&"a".into(), |_| None).unwrap(), None);
        assert_eq!(d.get(&"a".into()).unwrap(), None);
        d.clear().unwrap();
        assert_eq!(d.len().unwrap(), 0);
    });
}

fn double(x: u32) -> u32 {
    x * 2
}

#[test]
fn a_list_does_what_python_s_does_and_sorts_by_the_type_s_order() {
    within(LIMIT, || {
        let manager = Manager::new().unwrap();
        // Encoded, 300 is [172, 2] and 3 is [3]: a sort of the bytes would
        // put 300 before 3.
        let l = manager.list([300u32, 3, 20]).unwrap();
        l.push(1000).unwrap();
        l.sort().unwrap();
        assert_eq!(l.to_vec().unwrap(), [3, 20, 300, 1000]);
        l.reverse().unwrap();
        assert_eq!(l.to_vec().unwrap(), [1000, 300, 20, 3]);
        assert_eq!(l.get(1).unwrap(), 300);
        assert_eq!(l.set(1, 7).unwrap(), 300);
        l.insert(0, 1).unwrap();
        l.insert(99, 2).unwrap();
        assert_eq!(l.to_vec().unwrap(), [1, 1000, 7, 20, 3, 2]);
        assert_eq!(l.remove(1).unwrap(), 1000);
        assert_eq!(l.pop().unwrap(), Some(2));
        l.extend([4, 5]).unwrap();
        assert_eq!(l.update(0, double).unwrap(), 2);
        assert_eq!(l.to_vec().unwrap(), [2, 7, 20, 3, 4, 5]);
        assert_eq!(l.len().unwrap(), 6);
        let e = l.get(6).unwrap_err();
        assert!(
            matches!(e, Error::IndexOutOfRange { index: 6, len: 6 }),
            "{e}"
        );
        assert!(matches!(
            l.update(9, double).unwrap_err(),
            Error::IndexOutOfRange { index: 9, len: 6 }
        ));
        l.clear().unwrap();
        assert_eq!(l.pop().unwrap(), None);
    });
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Settings {
    rounds: u32,
    label: String,
}

fn next_round(mut s: Settings) -> Settings {
    s.rounds += 1;
    s
}

/// What a child does with the three proxies it was given: fills the dict,
/// reverses the list, counts a round; returns its pid.
fn use_them((d, l, ns): (Dict<String, u32>, List<u32>, Namespace<Settings>)) -> u32 {
    for i in 0..5 {
        d.insert(format!("k{i}"), i * i).unwrap();
    }
    l.reverse().unwrap();
    ns.update(next_round).unwrap();
    std::process::id()
}

fn check_a_child_uses_them(manager: &Manager, method: StartMethod) {
    let d = manager.dict::<String, u32>().unwrap();
    let l = manager.list([1, 2, 3]).unwrap();
    let ns = manager
        .namespace(Settings {
            rounds: 0,
            label: "x".into(),
        })
        .unwrap();
    let mut child = mpcore::process::Builder::new()
        .start_method(method)
        .spawn_fn(use_them, (d.clone(), l.clone(), ns.clone()))
        .unwrap();
    let pid = child.join().unwrap();
    assert_ne!(pid, std::process::id());
    assert_eq!(
        d.items().unwrap(),
        (0..5).map(|i| (format!("k{i}"), i * i)).collect::<Vec<_>>()
    );
    assert_eq!(l.to_vec().unwrap(), [3, 2, 1]);
    assert_eq!(ns.get().unwrap().rounds, 1);
}

under_every_method! {
    /// A child started by each method, with a forked manager.
    fn a_child_fills_a_dict_and_reverses_a_list(method) {
        within(LIMIT, move || {
            let manager = Manager::with_start_method(StartMethod::Fork).unwrap();
            check_a_child_uses_them(&manager, method);
        });
    }

    /// The manager's server itself started by each method, used from a
    /// child started the same way.
    fn a_manager_started_by_each_method_serves_children(method) {
        within(LIMIT, move || {
            let manager = Manager::with_start_method(method).unwrap();
            check_a_child_uses_them(&manager, method);
        });
    }
}

static COUNTS: OnceLock<Dict<u64, u64>> = OnceLock::new();

fn keep(counts: Dict<u64, u64>) {
    let _ = COUNTS.set(counts);
}

fn count(x: u64) -> u64 {
    let counts = COUNTS.get().expect("the initializer ran");
    counts.update_with(&(x % 3), add_one).unwrap().unwrap()
}

under_every_method! {
    /// Pool workers get the proxy through the initializer and count into
    /// one dict.
    fn pool_workers_count_into_one_dict(method) {
        within(LIMIT, move || {
            let manager = Manager::new().unwrap();
            let counts = manager.dict::<u64, u64>().unwrap();
            let pool: Pool = mpcore::pool::Builder::new()
                .processes(2)
                .start_method(method)
                .initializer_fn(keep, counts.clone())
                .build()
                .unwrap();
            pool.map(count, 0..60).unwrap();
            assert_eq!(counts.items().unwrap(), [(0, 20), (1, 20), (2, 20)]);
        });
    }
}

#[test]
fn threads_of_one_process_share_a_proxy() {
    within(LIMIT, || {
        let manager = Manager::new().unwrap();
        let counts = manager.dict::<u8, u64>().unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..500 {
                        counts.update_with(&0, add_one).unwrap();
                    }
                });
            }
        });
        assert_eq!(counts.get(&0).unwrap(), Some(2000));
    });
}

#[test]
fn a_namespace_holds_one_typed_value() {
    within(LIMIT, || {
        let manager = Manager::new().unwrap();
        let first = Settings {
            rounds: 0,
            label: "first".into(),
        };
        let ns = manager.namespace(first.clone()).unwrap();
        let second = Settings {
            rounds: 5,
            label: "second".into(),
        };
        assert_eq!(ns.set(second.clone()).unwrap(), first);
        assert_eq!(ns.update(next_round).unwrap().rounds, 6);
        let theirs = ns.with_timeout(Duration::from_secs(5));
        let mut child = Process::spawn(move || theirs.get().unwrap().label).unwrap();
        assert_eq!(child.join().unwrap(), "second");
    });
}

#[test]
fn large_values_travel_both_ways() {
    within(LIMIT, || {
        let manager = Manager::new().unwrap();
        let blobs = manager.dict::<u8, Vec<u8>>().unwrap();
        // Beyond a packet's inline room: the value and the snapshot of
        // many travel through a memfd.
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        blobs.insert(1, big.clone()).unwrap();
        blobs.insert(2, big.clone()).unwrap();
        assert_eq!(blobs.get(&1).unwrap().as_deref(), Some(&big[..]));
        assert_eq!(blobs.values().unwrap(), [big.clone(), big.clone()]);
        let theirs = blobs.clone();
        let mut child = Process::spawn(move || theirs.get(&2).unwrap().map(|b| b.len())).unwrap();
        assert_eq!(child.join().unwrap(), Some(big.len()));
    });
}
