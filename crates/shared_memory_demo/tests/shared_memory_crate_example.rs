//! `cargo run -p shared_memory_demo --example shared_memory_crate`: the
//! chapter's values in a segment of the `shared_memory` crate.

use std::time::Duration;

#[test]
fn the_shared_memory_crate_example_shares_the_values_and_unlinks_on_drop() {
    let run = testkit::run_example(
        "shared_memory_demo",
        "shared_memory_crate",
        &[],
        Duration::from_secs(600),
    );
    run.assert_success();
    let lines = run.lines();
    assert_eq!(
        lines[..2],
        [
            "before the child: value1 = 0, value2 = 3.14, array = [1, 2, 3, 4]",
            "after the child : value1 = 1, value2 = 6.28, array = [1, 4, 9, 16]",
        ]
    );
    let file = lines[2]
        .strip_prefix("in use: ")
        .and_then(|rest| rest.strip_suffix(" exists: true"))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(file.starts_with("/dev/shm/shmem_"), "{file}");
    assert_eq!(
        lines[3],
        format!("dropped by its creator: {file} exists: false")
    );
    assert!(!std::path::Path::new(file).exists());
}
