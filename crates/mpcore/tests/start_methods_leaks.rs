//! Spawned children leave no descriptor open in the parent and nothing in
//! `/dev/shm`. In a binary of its own, with one test: the count of open
//! descriptors is the whole process's, which other tests would change.

use std::time::Duration;

use mpcore::process::Builder;
use mpcore::{Queue, StartMethod, Value};
use testkit::{dev_shm_entries, open_fds, within};

fn add_and_report((v, q): (Value<u64>, Queue<u64>)) {
    *v.lock().unwrap() += 1;
    q.put(1).unwrap();
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
    });
}
