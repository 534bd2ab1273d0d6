//! Spawned children, and children of the fork server, leave no descriptor
//! open in the parent and nothing in `/dev/shm`. In a binary of its own, with one test: the count of open
//! descriptors is the whole process's, which other tests would change.

use std::time::Duration;

use mpcore::process::Builder;
use mpcore::{Queue, StartMethod, Value};
use testkit::{dev_shm_entries, open_fds, within};

fn add_and_report((v, q): (Value<u64>, Queue<u64>)) {
    *v.lock().unwrap() += 1;
    q.put(1).unwrap();
}

fn sleep_a_minute(_: Queue<u64>) {
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn spawning_leaves_no_descriptor_and_nothing_in_dev_shm() {
    within(Duration::from_secs(30), || {
        let shm_before = dev_shm_entries();
        let v = Value::new(0u64).unwrap();
        let q = Queue::new().unwrap();
        let fds_before = open_fds();
        for _ in 0..5 {
            let mut p = Builder::new()
                .start_method(StartMethod::Spawn)
                .spawn_fn(add_and_report, (v.clone(), q.clone()))
                .unwrap();
            p.join().unwrap();
        }
        assert_eq!(v.get().unwrap(), 5);
        assert_eq!((0..5).map(|_| q.get().unwrap()).sum::<u64>(), 5);
        assert_eq!(open_fds(), fds_before);
        assert_eq!(dev_shm_entries(), shm_before);

        // The fork server keeps one socket open for the program's life:
        // count from after its first child.
        let by_server = || Builder::new().start_method(StartMethod::ForkServer);
        by_server()
            .spawn_fn(add_and_report, (v.clone(), q.clone()))
            .unwrap()
            .join()
            .unwrap();
        let fds_before = open_fds();
        for _ in 0..5 {
            let mut p = by_server()
                .spawn_fn(add_and_report, (v.clone(), q.clone()))
                .unwrap();
            p.join().unwrap();
        }
        // A child that is killed leaves nothing either.
        let mut p = by_server().spawn_fn(sleep_a_minute, q.clone()).unwrap();
        p.kill().unwrap();
        assert!(p.join().is_err());
        drop(p);
        assert_eq!(v.get().unwrap(), 11);
        assert_eq!((0..6).map(|_| q.get().unwrap()).sum::<u64>(), 6);
        assert_eq!(open_fds(), fds_before);
        assert_eq!(dev_shm_entries(), shm_before);
    });
}
