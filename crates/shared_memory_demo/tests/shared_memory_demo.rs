use std::ffi::{c_long, c_ulong};
use std::time::Duration;

#[test]
fn the_child_changes_what_the_parent_reads() {
    let run = testkit::run(
        env!("CARGO_BIN_EXE_shared_memory_demo"),
        &[],
        Duration::from_secs(60),
    );
    run.assert_success();
    let lines = run.lines();
    assert_eq!(
        lines[0],
        "before the child: value1 = 0, value2 = 3.14, array = [1, 2, 3, 4]"
    );
    assert_eq!(
        lines[1],
        "after the child : value1 = 1, value2 = 6.28, array = [1, 4, 9, 16]"
    );
}

#[test]
fn the_type_code_table_has_every_code_with_its_measured_size() {
    let run = testkit::run(
        env!("CARGO_BIN_EXE_shared_memory_demo"),
        &[],
        Duration::from_secs(60),
    );
    run.assert_success();
    let rows: Vec<Vec<&str>> = run
        .lines()
        .into_iter()
        .filter(|l| l.starts_with('\''))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let codes: String = rows.iter().map(|r| r[0].trim_matches('\'')).collect();
    assert_eq!(codes, "bBuhHiIlLqQfd");
    // The last column is the size on this machine: check a few against
    // what this test's own compiler says.
    let size = |code: &str| -> usize {
        let row = rows.iter().find(|r| r[0] == format!("'{code}'")).unwrap();
        row.last().unwrap().parse().unwrap()
    };
    assert_eq!(size("i"), size_of::<i32>());
    assert_eq!(size("l"), size_of::<c_long>());
    assert_eq!(size("L"), size_of::<c_ulong>());
    assert_eq!(size("u"), 4);
    assert_eq!(size("d"), 8);
}

#[test]
fn the_type_code_table_keeps_the_tutorials_python_type_column() {
    let run = testkit::run(
        env!("CARGO_BIN_EXE_shared_memory_demo"),
        &[],
        Duration::from_secs(60),
    );
    run.assert_success();
    let lines = run.lines();
    let header = lines
        .iter()
        .find(|l| l.starts_with("code"))
        .expect("a header row");
    let column = header.find("Python type").expect("a Python type column");
    // The cell runs from the column's start to the next run of spaces.
    let python_types: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with('\''))
        .map(|l| l[column..].split("  ").next().unwrap())
        .collect();
    let int = "int";
    assert_eq!(
        python_types,
        [
            int,
            int,
            "Unicode character",
            int,
            int,
            int,
            int,
            int,
            int,
            int,
            int,
            "float",
            "float"
        ]
    );
}
