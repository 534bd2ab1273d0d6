//! The program's default start method, set once. In a binary of its own:
//! the default is process-wide.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mpcore::{Error, Process, StartMethod, get_start_method, set_start_method};
use testkit::within;

/// Set by the parent; only a forked child would see it.
static MARK: AtomicU32 = AtomicU32::new(0);

fn read_the_mark(_: ()) -> u32 {
    MARK.load(Ordering::SeqCst)
}

#[test]
fn the_default_is_set_once_and_used_by_spawn_fn() {
    within(Duration::from_secs(30), || {
        assert_eq!(get_start_method(), StartMethod::Fork);
        MARK.store(7, Ordering::SeqCst);
        let mut forked = Process::spawn_fn(read_the_mark, ()).unwrap();
        assert_eq!(forked.join().unwrap(), 7);

        set_start_method(StartMethod::Spawn).unwrap();
        set_start_method(StartMethod::Spawn).unwrap();
        assert_eq!(get_start_method(), StartMethod::Spawn);
        let e = set_start_method(StartMethod::Fork).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the start method is already set to spawn, and can be set only once per program; \
             choose it once, at the top of main, or pick another one for a single process with \
             process::Builder::start_method(Fork)"
        );

        // A fresh program: the parent's memory is not there.
        let mut spawned = Process::spawn_fn(read_the_mark, ()).unwrap();
        assert_eq!(spawned.join().unwrap(), 0);
        assert!(matches!(
            Process::spawn(|| 1),
            Err(Error::ClosureNeedsFork {
                method: StartMethod::Spawn
            })
        ));
    });
}
