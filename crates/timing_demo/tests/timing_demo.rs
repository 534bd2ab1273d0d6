//! Runs the binary with small jobs and checks what it prints and draws.
//! No test asserts a time: on a shared 2-core machine times are noise.
//! The deadline only catches a hang.

use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);
const TUTORIAL_RESULT: &str = "499999666667166666000000";

fn run(args: &[&str]) -> testkit::Run {
    testkit::run(env!("CARGO_BIN_EXE_timing_demo"), args, LIMIT)
}

/// The table row that starts with `way`, split into its columns:
/// workers, result, time, "ms", speed-up.
fn row<'a>(lines: &[&'a str], way: &str) -> Vec<&'a str> {
    let line = lines
        .iter()
        .find(|l| l.starts_with(way) && l[way.len()..].starts_with("  "))
        .unwrap_or_else(|| panic!("no row {way:?} in {lines:#?}"));
    line[way.len()..].split_whitespace().collect()
}

#[test]
fn the_tutorial_job_gives_the_tutorial_result_every_way() {
    let out = run(&["--n", "1000000"]);
    out.assert_success();
    let lines = out.lines();
    assert!(
        lines[0].starts_with(
            "CPU-bound: 2 jobs of `res += i + i**2 + i**3` for i in range(1000000), on "
        ),
        "{}",
        lines[0]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["way", "workers", "result", "time", "vs", "normal"]
    );
    for (way, workers) in [("normal", "1"), ("multithread", "2"), ("multicore", "2")] {
        let cols = row(&lines, way);
        assert_eq!(cols[0], workers, "{way}");
        assert_eq!(cols[1], TUTORIAL_RESULT, "{way}");
        assert!(cols[2].parse::<f64>().unwrap() >= 0.0);
        assert_eq!(cols[3], "ms");
        assert!(cols[4].ends_with('x'), "{cols:?}");
    }
    assert_eq!(row(&lines, "normal")[4], "1.00x");
    assert_eq!(
        lines.len(),
        5,
        "no GIL or I/O rows unless asked: {lines:#?}"
    );
}

#[test]
fn more_workers_do_more_jobs() {
    let out = run(&["--n", "1000", "--workers", "3"]);
    out.assert_success();
    let lines = out.lines();
    // The 多进程 tutorial, section 3: one job of range(1000) is 249833583000.
    let three_jobs = (3 * 249_833_583_000u64).to_string();
    for (way, workers) in [("normal", "1"), ("multithread", "3"), ("multicore", "3")] {
        assert_eq!(
            row(&lines, way)[..2],
            [workers, three_jobs.as_str()],
            "{way}"
        );
    }
}

#[test]
fn gil_and_io_add_their_rows_and_every_way_agrees() {
    let out = run(&["--n", "200000", "--gil", "--io"]);
    out.assert_success();
    let lines = out.lines();
    let split = lines
        .iter()
        .position(|l| l.is_empty())
        .expect("a blank line");
    let (cpu, io) = (&lines[..split], &lines[split + 1..]);
    assert!(
        io[0].starts_with("I/O-bound: 2 jobs of 10 requests"),
        "{}",
        io[0]
    );
    for table in [cpu, io] {
        let ways = ["normal", "multithread", "multicore", "multithread + GIL"];
        let results: Vec<&str> = ways.iter().map(|w| row(table, w)[1]).collect();
        assert!(results.iter().all(|r| *r == results[0]), "{results:?}");
        assert_eq!(table.len(), 2 + ways.len());
    }
}

#[test]
fn svg_holds_one_panel_per_way_with_its_lanes() {
    let path = std::env::temp_dir().join(format!("timing-demo-{}.svg", std::process::id()));
    let path_arg = path.to_str().unwrap();
    let out = run(&["--n", "100000", "--gil", "--svg", path_arg]);
    out.assert_success();
    assert!(out.stdout.contains("timeline written to"), "{}", out.stdout);
    let svg = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();

    assert!(svg.trim_start().starts_with("<svg"), "{}", &svg[..80]);
    assert!(svg.trim_end().ends_with("</svg>"));
    let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    let count = |t: &str| texts.iter().filter(|x| **x == t).count();
    for way in ["normal", "multithread", "multicore", "multithread + GIL"] {
        let caption = format!("CPU-bound, {way}: ");
        assert_eq!(
            texts.iter().filter(|t| t.starts_with(&caption)).count(),
            1,
            "{caption:?} in {texts:?}"
        );
    }
    // A job cut into slices (under the GIL, when it runs longer than a
    // switch interval) is named beside its lane, "thread 1, job 1"; a job
    // in one piece on its bar.
    let lane = |name: &str| {
        texts
            .iter()
            .filter(|t| **t == name || t.starts_with(&format!("{name}, job ")))
            .count()
    };
    assert_eq!(count("main thread"), 1);
    assert_eq!(lane("thread 1"), 2, "multithread and GIL panels");
    assert_eq!(lane("thread 2"), 2);
    assert_eq!(
        texts.iter().filter(|t| t.starts_with("process ")).count(),
        2
    );
    // Each job named once per panel: 2 in normal's lane, 1 in each other.
    let job = |n: u32| {
        texts
            .iter()
            .filter(|t| **t == format!("job {n}") || t.ends_with(&format!(", job {n}")))
            .count()
    };
    assert_eq!(job(1), 4);
    assert_eq!(job(2), 4);
    // No label box: every rectangle is a bar, a background or a panel.
    assert!(
        !svg.contains("opacity=\"0.85\""),
        "a white label box over the bars"
    );
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    let out = run(&["--n", "7000000000"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.contains("overflows u128"), "{}", out.stderr);

    let out = run(&["--workers", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stderr.contains("--workers must be at least 1"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}
