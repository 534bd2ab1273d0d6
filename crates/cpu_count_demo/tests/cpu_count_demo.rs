use std::time::Duration;

#[test]
fn starts_one_process_per_cpu() {
    let run = testkit::run(
        env!("CARGO_BIN_EXE_cpu_count_demo"),
        &[],
        Duration::from_secs(60),
    );
    run.assert_success();
    let lines = run.lines();
    let count: usize = lines[0]
        .strip_prefix("cpu_count:  ")
        .expect("first line gives the count")
        .parse()
        .unwrap();
    assert_eq!(
        count,
        mpcore::cpu_count(),
        "the same count as the library gives this test"
    );
    let mut cores: Vec<&str> = lines[1..].to_vec();
    cores.sort();
    let mut expected: Vec<String> = (0..count)
        .map(|i| format!("This is cpu core:  {i}"))
        .collect();
    expected.sort();
    assert_eq!(cores, expected, "one line per core, in any order");
}
