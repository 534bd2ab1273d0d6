//! `active_children()`: exactly the children of this process that still
//! run, the finished ones reaped. Its tests run one at a time (a lock),
//! and nothing else in this file starts children, so the set is exact.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use mpcore::process::Builder;
use mpcore::{Event, Pool, Process, StartMethod, active_children};
use testkit::{proc_state, wait_until_ended, within};

#[macro_use]
mod methods;

const LIMIT: Duration = Duration::from_secs(60);

/// One test at a time: each sees only its own children.
static ALONE: Mutex<()> = Mutex::new(());

fn quick(n: u32) -> u32 {
    n
}

fn wait_for(go: Event) -> bool {
    go.wait_timeout(Duration::from_secs(30)).is_ok()
}

fn running() -> BTreeSet<i32> {
    active_children().iter().map(|child| child.pid()).collect()
}

under_every_method! {
    /// Five children; two end at once. `active_children` lists exactly the
    /// three others, with their names and start method, and reaps the two
    /// (no zombie left), whose handles then still join and say how they
    /// ended.
    fn only_the_running_children_are_listed_and_the_finished_reaped(method) {
        let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
        within(LIMIT, move || {
            assert!(running().is_empty());
            let go = Event::new().unwrap();
            let mut quick_ones: Vec<Process<u32>> = (0..2)
                .map(|n| Builder::new().start_method(method).spawn_fn(quick, n).unwrap())
                .collect();
            let mut waiting: Vec<Process<bool>> = (0..3)
                .map(|n| {
                    Builder::new()
                        .start_method(method)
                        .name(format!("waiter-{n}"))
                        .spawn_fn(wait_for, go.clone())
                        .unwrap()
                })
                .collect();
            for child in &quick_ones {
                assert!(wait_until_ended(child.pid(), Duration::from_secs(20)));
            }
            let listed = active_children();
            let expected: BTreeSet<i32> = waiting.iter().map(|p| p.pid()).collect();
            assert_eq!(listed.iter().map(|c| c.pid()).collect::<BTreeSet<_>>(), expected);
            for child in &listed {
                assert!(child.name().starts_with("waiter-"), "{child:?}");
                assert_eq!(child.start_method(), Some(method));
                assert!(!child.is_daemon());
            }
            if method != StartMethod::ForkServer {
                // Reaped: no zombie of ours is left (a fork server child
                // is the server's to reap).
                for child in &quick_ones {
                    assert_eq!(proc_state(child.pid()), None, "pid {}", child.pid());
                }
            }
            for (n, child) in quick_ones.iter_mut().enumerate() {
                assert!(!child.is_alive());
                assert_eq!(child.join().unwrap(), n as u32);
                assert_eq!(child.exitcode(), Some(0));
            }
            go.set();
            for child in &mut waiting {
                assert!(child.join().unwrap());
            }
            assert!(running().is_empty());
        });
    }
}

/// A dropped handle's child is no longer listed (the drop waited for it).
#[test]
fn a_dropped_handle_is_not_listed() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    within(LIMIT, || {
        let child = Process::spawn(|| std::thread::sleep(Duration::from_millis(100))).unwrap();
        assert_eq!(running(), BTreeSet::from([child.pid()]));
        drop(child);
        assert!(running().is_empty());
    });
}

/// A pool's workers are children too, named as Python names them, until
/// the pool is gone.
#[test]
fn a_pools_workers_are_active_children() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    within(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let names: BTreeSet<String> = active_children()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        assert_eq!(
            names,
            BTreeSet::from(["ForkPoolWorker-1".to_owned(), "ForkPoolWorker-2".to_owned()])
        );
        drop(pool);
        assert!(running().is_empty());
    });
}

/// A forked child's own list starts empty: its parent's children are not
/// its children.
#[test]
fn a_forked_child_starts_with_no_children() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    within(LIMIT, || {
        let go = Event::new().unwrap();
        let mut sibling = Process::spawn({
            let go = go.clone();
            move || wait_for(go)
        })
        .unwrap();
        let mut child = Process::spawn(|| {
            let before = active_children().len();
            let mut own = Process::spawn(|| 1).unwrap();
            let during: Vec<i32> = active_children().iter().map(|c| c.pid()).collect();
            (before, during == [own.pid()], own.join().unwrap())
        })
        .unwrap();
        assert_eq!(child.join().unwrap(), (0, true, 1));
        go.set();
        assert!(sibling.join().unwrap());
    });
}
