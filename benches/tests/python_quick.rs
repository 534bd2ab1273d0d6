//! Runs the Python side of `just compare` in its `--quick` mode, and the
//! driver with the Rust side, so that neither can rot. This is not a
//! benchmark: nothing here looks at a time. Without `python3` the tests
//! say so and pass (CI machines without Python still build and test).

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

fn python_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// `python3`, or `None` after printing why the test is skipped.
fn python3(test: &str) -> Option<Command> {
    match Command::new("python3").arg("--version").output() {
        Ok(out) if out.status.success() => Some(Command::new("python3")),
        _ => {
            // Straight to the stderr descriptor, not `eprintln!`: the test
            // harness captures the print macros of passing tests, and this
            // skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: python3 not found on PATH; install Python 3 to run it"
            );
            None
        }
    }
}

#[test]
fn python_workloads_quick_print_one_json_line_each() {
    let Some(mut python) = python3("python_workloads_quick_print_one_json_line_each") else {
        return;
    };
    let out = python
        .arg(python_dir().join("mp_workloads.py"))
        .arg("--quick")
        .output()
        .expect("run mp_workloads.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mp_workloads.py --quick failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    // mpbench's workloads in its order, then the Python-only ones.
    let names: Vec<&str> = mpbench::WORKLOADS
        .iter()
        .map(|w| w.name)
        .chain(mpbench::PYTHON_ONLY.iter().copied())
        .collect();
    assert_eq!(lines.len(), names.len(), "{stdout}");
    for (line, name) in lines.iter().zip(names) {
        assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
        assert!(line.contains("\"impl\": \"python\""), "{line}");
        assert!(
            line.contains(&format!("\"workload\": \"{name}\"")),
            "{line} should be {name}"
        );
        assert!(line.contains("\"median_s\": "), "{line}");
    }
}

#[test]
fn compare_quick_prints_the_table_and_draws_the_ratios() {
    let Some(mut python) = python3("compare_quick_prints_the_table_and_draws_the_ratios") else {
        return;
    };
    let svg = std::env::temp_dir().join(format!("mpbench-ratios-{}.svg", std::process::id()));
    let out = python
        .arg(python_dir().join("compare.py"))
        .arg("--quick")
        .arg("--rust-bin")
        .arg(env!("CARGO_BIN_EXE_compare"))
        .arg("--svg")
        .arg(&svg)
        .output()
        .expect("run compare.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "compare.py --quick failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("| workload"), "{stdout}");
    for row in [
        "spawn + join, returning",
        "spawn + join, start method spawn",
        "Pool(2) + map 10 + close, mpcore default vs Python forkserver",
        "Queue, 1 MiB",
        "chunksize 1",
        "locked Value",
        "2 processes (speed-up)",
    ] {
        assert!(stdout.contains(row), "no row {row:?} in\n{stdout}");
    }

    // The chart: one bar per row of the table, each titled with the ratio
    // the table printed, and a warning that a quick run is not to be quoted.
    let text = std::fs::read_to_string(&svg).expect("compare.py --svg wrote no file");
    std::fs::remove_file(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("the chart is well-formed XML");
    let bars: Vec<String> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("bar"))
        .map(|bar| {
            bar.descendants()
                .filter(|n| n.is_text())
                .filter_map(|n| n.text())
                .collect()
        })
        .collect();
    let table_rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| workload") && !l.starts_with("| -"))
        .collect();
    assert_eq!(bars.len(), table_rows.len(), "{bars:?}\n{stdout}");
    for (bar, row) in bars.iter().zip(&table_rows) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // cells: "", workload, unit, Python, mpcore, mpcore/Python, ...
        assert_eq!(*bar, format!("{}: {}", cells[1], cells[5]), "{row}");
    }
    assert!(text.contains("A --quick run"), "{text}");
}

/// The forkserver row: measured against Python's forkserver and against
/// mpcore's own fork (its floor column), with both goals judged. Until
/// mpcore has its fork server, compare.py says "not measured" instead, and
/// this test fails.
#[test]
fn compare_quick_judges_forkserver_against_python_and_mpcore_fork() {
    let Some(mut python) =
        python3("compare_quick_judges_forkserver_against_python_and_mpcore_fork")
    else {
        return;
    };
    let out = python
        .arg(python_dir().join("compare.py"))
        .args(["--quick", "--rust-bin", env!("CARGO_BIN_EXE_compare")])
        .arg("spawn_join_forkserver")
        .output()
        .expect("run compare.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("not measured"), "{stdout}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| spawn + join, start method forkserver"))
        .unwrap_or_else(|| panic!("no forkserver row in\n{stdout}"));
    // "met" or "NOT met": the figures of a quick run are not judged here.
    assert!(row.contains(">= 5x Python "), "{row}");
    assert!(row.contains("<= 2x mpcore fork "), "{row}");
}
