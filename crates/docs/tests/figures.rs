//! Every measured figure the chapters quote comes from a recorded run, so
//! that one figure has one value across the course.
//!
//! The recorded runs are `docs/data/compare.json` (`just compare`) and
//! `docs/data/criterion.json` (`cargo bench`), written by `just record`
//! (benches/README.md); the chapters include the tables rendered from
//! them. This test reads every page's prose, outside code blocks and code
//! spans, and finds each figure: a number followed by a unit of time
//! (`ns`, `µs`, `ms`, `s`), a ratio (`2.89x`), a rate (`9.62 million`,
//! `3.65 GB/s`). Each one must be a value of the recorded runs, rounded as
//! it is quoted (`1.76 ms` for 1,762 µs; a time per operation may also be
//! quoted from a rate, `0.40 µs` for 2,528,530 messages a second), or a
//! figure that the same page shows in a program's quoted output (a
//! `text` or `console` block: a demo's run, the tutorial's). The few
//! figures that are no measurement, the program's own constants (a 5 ms
//! switch interval, a 20 ms sleep), are listed in [`NOT_MEASURED`], each
//! with why.

use std::fs;
mod common;

use common::{docs, included};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Seconds.
    Time,
    /// A plain ratio, `x`.
    Ratio,
    /// Things per second.
    Rate,
    /// Bytes per second.
    Bytes,
}

/// A figure quoted in the prose: its value in the unit it is written in,
/// how many decimals it has, and the unit's size in the kind's base unit.
#[derive(Debug)]
struct Quoted {
    text: String,
    number: f64,
    decimals: i32,
    scale: f64,
    kind: Kind,
    line: usize,
}

/// The figures that are not measurements, by page: the programs'
/// constants and the tutorials' parameters. Each entry is the figure as
/// the page writes it.
const NOT_MEASURED: &[(&str, &str, &str)] = &[
    ("README.md", "25 s", "the first build, timed by hand once"),
    (
        "00-threads-vs-processes.md",
        "5 ms",
        "CPython's switch interval",
    ),
    (
        "05-timing-comparison.md",
        "5 ms",
        "CPython's switch interval, and the demo's",
    ),
    (
        "05-timing-comparison.md",
        "20 ms",
        "the I/O job's wait per request",
    ),
    (
        "05-timing-comparison.md",
        "200 ms",
        "the I/O job's 10 waits of 20 ms",
    ),
    (
        "06-pool.md",
        "100 ms",
        "the pool's retry interval for a replacement",
    ),
    (
        "06-pool.md",
        "2 s",
        "how long the pool waits without any worker",
    ),
    ("08-lock.md", "0.1 s", "the tutorial's sleep"),
    ("08-lock.md", "1.5 s", "a timeout the tests use"),
    ("08-lock.md", "10 s", "a timeout the tests use"),
    ("08-lock.md", "999 ms", "a timeout the tests use"),
    ("08-lock.md", "1 ms", "a timeout the tests use"),
    (
        "10-performance.md",
        "20 µs",
        "how long a get or a wait spins",
    ),
    (
        "10-performance.md",
        "50 µs",
        "how long the supervisor spins",
    ),
    (
        "10-performance.md",
        "100 µs",
        "the pool's threshold for a fast chunk",
    ),
    (
        "10-performance.md",
        "200 µs",
        "how long a caller spins, at most",
    ),
    (
        "12-start-methods.md",
        "500 ms",
        "how long a fork waits for stdout",
    ),
];

/// The figures of one line of prose.
fn figures_in(line: &str, n: usize) -> Vec<Quoted> {
    // Code spans are not prose.
    let mut prose = String::new();
    for (i, part) in line.split('`').enumerate() {
        prose.push_str(if i % 2 == 0 { part } else { " " });
    }
    let chars: Vec<char> = prose.chars().collect();
    let mut found: Vec<Quoted> = Vec::new();
    // A number without a unit, waiting for the second end of a range
    // ("46.0 to 48.0 µs") to give it one.
    let mut pending: Option<(String, f64, i32)> = None;
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i].is_ascii_digit()
            && (i == 0
                || !(chars[i - 1].is_alphanumeric()
                    || matches!(chars[i - 1], '.' | '_' | '-' | '/' | ':' | '\'')));
        if !starts {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < chars.len()
            && (chars[j].is_ascii_digit()
                || ((chars[j] == ',' || chars[j] == '.')
                    && chars.get(j + 1).is_some_and(char::is_ascii_digit)))
        {
            j += 1;
        }
        let digits: String = chars[i..j].iter().filter(|c| **c != ',').collect();
        let decimals = digits.split('.').nth(1).map_or(0, |d| d.len() as i32);
        let Ok(number) = digits.parse::<f64>() else {
            i = j;
            continue;
        };
        let rest: String = chars[j..].iter().collect();
        let unit = unit_after(&rest);
        let text: String = chars[i..j].iter().collect();
        match unit {
            Some((name, scale, kind, len)) => {
                if let Some((first, value, d)) = pending.take() {
                    let text = if name == "x" {
                        format!("{first}x")
                    } else {
                        format!("{first} {name}")
                    };
                    found.push(Quoted {
                        text,
                        number: value,
                        decimals: d,
                        scale,
                        kind,
                        line: n,
                    });
                }
                let text = if name == "x" {
                    format!("{text}x")
                } else {
                    format!("{text} {name}")
                };
                found.push(Quoted {
                    text,
                    number,
                    decimals,
                    scale,
                    kind,
                    line: n,
                });
                i = j + len;
            }
            None => {
                let joins = [" to ", " and ", "–", "-"]
                    .iter()
                    .find(|w| rest.starts_with(*w));
                pending = joins.map(|_| (text, number, decimals));
                i = j;
            }
        }
    }
    found
}

/// The unit right after a number: its name, its size in its kind's base
/// unit, its kind, and how many characters it takes.
fn unit_after(rest: &str) -> Option<(&'static str, f64, Kind, usize)> {
    const UNITS: [(&str, f64, Kind); 9] = [
        ("ns", 1e-9, Kind::Time),
        ("µs", 1e-6, Kind::Time),
        ("ms", 1e-3, Kind::Time),
        ("s", 1.0, Kind::Time),
        ("x", 1.0, Kind::Ratio),
        ("million", 1e6, Kind::Rate),
        ("GB/s", 1e9, Kind::Bytes),
        ("MB/s", 1e6, Kind::Bytes),
        ("%", 0.01, Kind::Ratio),
    ];
    let spaced = rest
        .strip_prefix(' ')
        .or_else(|| rest.strip_prefix('\u{a0}'));
    for (name, scale, kind) in UNITS {
        // A ratio is written against its number; the others after a space
        // (or against it, as Rust prints `500ms`).
        let candidates: &[(Option<&str>, usize)] = if kind == Kind::Ratio && name == "x" {
            &[(Some(rest), 0)]
        } else {
            &[(spaced, 1), (Some(rest), 0)]
        };
        for &(text, offset) in candidates {
            let Some(text) = text else { continue };
            if let Some(after) = text.strip_prefix(name) {
                if after.chars().next().is_none_or(|c| !c.is_alphanumeric()) {
                    return Some((name, scale, kind, offset + name.chars().count()));
                }
            }
        }
    }
    None
}

/// The recorded values, each in its kind's base unit.
fn recorded() -> Vec<(f64, Kind)> {
    let mut values = Vec::new();
    let read = |name: &str| -> serde_json::Value {
        let text = fs::read_to_string(docs().join("data").join(name))
            .unwrap_or_else(|e| panic!("docs/data/{name}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("docs/data/{name}: {e}"))
    };
    let compare = read("compare.json");
    let mut per_op = |unit: &str, value: f64| match unit {
        "us/op" => values.push((value * 1e-6, Kind::Time)),
        "ms/op" => values.push((value * 1e-3, Kind::Time)),
        "ns/iter" => values.push((value * 1e-9, Kind::Time)),
        "MB/s" => values.push((value * 1e6, Kind::Bytes)),
        "x normal" => values.push((value, Kind::Ratio)),
        _ => {
            // Things per second: also the time of one.
            values.push((value, Kind::Rate));
            values.push((1.0 / value, Kind::Time));
        }
    };
    for row in compare["rows"].as_array().expect("compare.json has rows") {
        let unit = row["unit"].as_str().unwrap();
        for key in ["python", "mpcore", "floor", "over_floor_by"] {
            if let Some(value) = row[key].as_f64() {
                per_op(unit, value);
            }
        }
    }
    for entry in compare["python_only"]
        .as_object()
        .into_iter()
        .flat_map(|o| o.values())
    {
        per_op(
            entry["unit"].as_str().unwrap(),
            entry["python"].as_f64().unwrap(),
        );
    }
    for row in compare["rows"].as_array().unwrap() {
        for key in ["ratio", "over_floor"] {
            if let Some(value) = row[key].as_f64() {
                values.push((value, Kind::Ratio));
            }
        }
    }
    let criterion = read("criterion.json");
    for bench in criterion["benches"]
        .as_array()
        .expect("criterion.json has benches")
    {
        let seconds = bench["median_ns"].as_f64().unwrap() * 1e-9;
        values.push((seconds, Kind::Time));
        if let Some(n) = bench["elements"].as_f64().filter(|n| *n > 1.0) {
            values.push((seconds / n, Kind::Time));
            values.push((n / seconds, Kind::Rate));
        }
        if let Some(bytes) = bench["bytes"].as_f64() {
            values.push((bytes / seconds, Kind::Bytes));
        }
    }
    values
}

/// The figures a page shows in its quoted outputs (`text` and `console`
/// blocks): with a unit, and, for the plain numbers that Python prints for
/// a time, as seconds.
fn shown(page: &str) -> Vec<(f64, Kind)> {
    let text = with_includes(&fs::read_to_string(docs().join(page)).unwrap());
    let mut values = Vec::new();
    let mut fence: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            fence = match fence {
                None => Some(trimmed.trim_start_matches('`').to_owned()),
                Some(_) => None,
            };
            continue;
        }
        let Some(kind) = &fence else { continue };
        if kind != "text" && kind != "console" {
            continue;
        }
        for figure in figures_in(line, n) {
            values.push((figure.number * figure.scale, figure.kind));
        }
        // Plain decimals: a Python time, in seconds.
        for word in line.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
            if word.contains('.') {
                if let Ok(value) = word.trim_matches('.').parse::<f64>() {
                    values.push((value, Kind::Time));
                }
            }
        }
    }
    values
}

/// A page with each `{{#include data/FILE}}` line replaced by the file.
fn with_includes(text: &str) -> String {
    text.lines()
        .map(|line| match included(line) {
            Some(text) => text.unwrap_or_else(|e| panic!("{e}")),
            None => format!("{line}\n"),
        })
        .collect()
}

/// A line without its figure marks (`<!-- fig ... -->`), which name
/// benchmarks whose names have numbers.
fn without_marks(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find("<!--") {
        out.push_str(&rest[..at]);
        rest = rest[at..].split_once("-->").map_or("", |(_, after)| after);
    }
    out.push_str(rest);
    out
}

/// The prose lines of a page, with their numbers: outside fenced code,
/// HTML comments and `{{#include}}` lines.
fn prose(page: &str) -> Vec<(usize, String)> {
    let text = fs::read_to_string(docs().join(page)).unwrap();
    let mut lines = Vec::new();
    let mut in_code = false;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code || trimmed.starts_with("<!--") || trimmed.starts_with("{{#include") {
            continue;
        }
        lines.push((n + 1, line.to_owned()));
    }
    lines
}

fn matches(figure: &Quoted, value: f64, kind: Kind) -> bool {
    if kind != figure.kind {
        return false;
    }
    let in_unit = value / figure.scale;
    let half = 0.5 * 10f64.powi(-figure.decimals);
    (in_unit - figure.number).abs() <= half * (1.0 + 1e-9) + 1e-12
}

fn pages() -> Vec<String> {
    let mut pages: Vec<String> = fs::read_dir(docs())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".md") && name != "SUMMARY.md")
        .collect();
    pages.sort();
    pages
}

#[test]
fn every_figure_in_the_prose_is_a_recorded_one() {
    let data = recorded();
    // A figure that a quoted output shows (a demo's run, a tutorial's
    // transcript) may be quoted on any page.
    let own: Vec<(f64, Kind)> = pages().iter().flat_map(|page| shown(page)).collect();
    let mut wrong = Vec::new();
    for page in pages() {
        for (n, line) in prose(&page) {
            for figure in figures_in(&without_marks(&line), n) {
                let exempt = NOT_MEASURED
                    .iter()
                    .any(|(p, text, _)| *p == page && *text == figure.text);
                let found = data
                    .iter()
                    .chain(&own)
                    .any(|&(v, k)| matches(&figure, v, k));
                if !exempt && !found {
                    wrong.push(format!(
                        "docs/{page}:{}: {} is in no recorded run and no quoted output",
                        figure.line, figure.text
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "figures that the recorded data (docs/data/, `just record`) does not hold:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_exemption_is_still_used() {
    let unused: Vec<String> = NOT_MEASURED
        .iter()
        .filter(|(page, text, _)| {
            !prose(page).iter().any(|(n, line)| {
                figures_in(&without_marks(line), *n)
                    .iter()
                    .any(|f| f.text == *text)
            })
        })
        .map(|(page, text, why)| format!("{text} in docs/{page} ({why})"))
        .collect();
    assert!(
        unused.is_empty(),
        "NOT_MEASURED lists figures the pages no longer say:\n{}",
        unused.join("\n")
    );
}

#[test]
fn figures_are_read_as_written() {
    let found = figures_in(
        "costs 1,762 µs, 46.0 to 48.0 µs, 2.89x and `9 ms` in code, 9.62 million a second, 3.65 GB/s; u64 and 3.11 are not",
        1,
    );
    let texts: Vec<&str> = found.iter().map(|f| f.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "1,762 µs",
            "46.0 µs",
            "48.0 µs",
            "2.89x",
            "9.62 million",
            "3.65 GB/s"
        ]
    );
    let quoted = &found[0];
    assert!(matches(quoted, 1762e-6, Kind::Time));
    assert!(!matches(quoted, 1870e-6, Kind::Time));
    // A rounded quote of a recorded value is the same figure.
    let rounded = &figures_in("1.76 ms", 1)[0];
    assert!(matches(rounded, 1762e-6, Kind::Time));
    assert!(!matches(rounded, 1.87e-3, Kind::Time));
}

#[test]
fn the_recorded_runs_are_complete() {
    let compare = fs::read_to_string(docs().join("data/compare.json")).unwrap();
    let compare: serde_json::Value = serde_json::from_str(&compare).unwrap();
    let names: Vec<&str> = compare["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    // Every workload of the side-by-side has its row (benches/src/lib.rs).
    for name in [
        "spawn_join",
        "spawn_join_spawn",
        "spawn_join_forkserver",
        "pool_map10",
        "queue_small",
        "queue_1mib",
        "pool_map_tiny",
        "pool_map_chunk1",
        "map_async",
        "apply_async_rtt",
        "value_incr",
        "event_wake",
        "barrier_round",
        "joinable_queue",
        "semaphore_uncontended",
        "condition_pingpong",
        "manager_dict",
        "manager_update",
        "timing_normal",
        "timing_threads",
        "timing_processes",
        "pipe_rtt",
        "pipe_1mib",
        "listener_rtt",
    ] {
        assert!(
            names.contains(&name),
            "docs/data/compare.json has no row {name}: run `just record`"
        );
    }
    // The rendered tables the chapters include are there.
    for file in [
        "compare.md",
        "compare-start-methods.md",
        "start-methods.md",
        "compare.svg",
        "compare-start-methods.svg",
        "criterion-spawn.md",
        "criterion-queue.md",
        "criterion-pool.md",
        "criterion-shared.md",
        "criterion-timing.md",
        "criterion-sync.md",
        "criterion-join_async.md",
    ] {
        assert!(
            docs().join("data").join(file).is_file(),
            "docs/data/{file} is missing: run `python3 benches/python/record.py`"
        );
    }
}

/// The figure marks of a line: the prose before each, and the mark's words.
fn marks_in(line: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(start) = line[at..].find("<!-- fig ") {
        let start = at + start;
        let Some(end) = line[start..].find("-->") else {
            break;
        };
        let key = line[start + "<!-- fig ".len()..start + end]
            .trim()
            .to_owned();
        found.push((without_marks(&line[..start]), key));
        at = start + end + 3;
    }
    found
}

/// A mark's words, a quoted name being one word.
fn words(key: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = key.trim();
    while !rest.is_empty() {
        let (word, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').expect("a closing quote in a figure mark");
            (&quoted[..end], &quoted[end + 1..])
        } else {
            rest.split_once(' ').unwrap_or((rest, ""))
        };
        words.push(word.to_owned());
        rest = after.trim_start();
    }
    words
}

fn from_unit(unit: &str, value: f64) -> (f64, Kind) {
    match unit {
        "us/op" => (value * 1e-6, Kind::Time),
        "ms/op" => (value * 1e-3, Kind::Time),
        "ns/iter" => (value * 1e-9, Kind::Time),
        "MB/s" => (value * 1e6, Kind::Bytes),
        _ => (value, Kind::Rate),
    }
}

/// The recorded value a mark names, as benches/python/record.py reads it.
fn marked(key: &str) -> (f64, Kind) {
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&fs::read_to_string(docs().join("data").join(name)).unwrap()).unwrap()
    };
    let w = words(key);
    let field = |i: usize| {
        w.get(i)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("a figure mark too short: {key}"))
    };
    match field(0) {
        "compare" => {
            let compare = read("compare.json");
            let row = compare["rows"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == field(1))
                .unwrap_or_else(|| panic!("no row {} in compare.json: {key}", field(1)))
                .clone();
            let value = row[field(2)]
                .as_f64()
                .unwrap_or_else(|| panic!("no {} in row {}: {key}", field(2), field(1)));
            let unit = row["unit"].as_str().unwrap();
            if matches!(field(2), "ratio" | "over_floor") || unit == "x normal" {
                (value, Kind::Ratio)
            } else {
                from_unit(unit, value)
            }
        }
        "only" => {
            let compare = read("compare.json");
            let entry = &compare["python_only"][field(1)];
            from_unit(
                entry["unit"].as_str().unwrap(),
                entry["python"].as_f64().unwrap(),
            )
        }
        "criterion" => {
            let criterion = read("criterion.json");
            let bench = criterion["benches"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["group"] == field(1) && b["name"] == field(2))
                .unwrap_or_else(|| {
                    panic!(
                        "no benchmark {:?} in group {} of criterion.json: {key}",
                        field(2),
                        field(1)
                    )
                })
                .clone();
            let seconds = bench["median_ns"].as_f64().unwrap() * 1e-9;
            match field(3) {
                "median" => (seconds, Kind::Time),
                "per" => (seconds / bench["elements"].as_f64().unwrap(), Kind::Time),
                "rate" => (bench["elements"].as_f64().unwrap() / seconds, Kind::Rate),
                "bytes" => (bench["bytes"].as_f64().unwrap() / seconds, Kind::Bytes),
                other => panic!("a criterion figure mark with field {other}: {key}"),
            }
        }
        "timing" => {
            let text =
                fs::read_to_string(docs().join("data").join(format!("timing-{}.txt", field(1))))
                    .unwrap();
            let title = if field(2) == "cpu" {
                "CPU-bound"
            } else {
                "I/O-bound"
            };
            let table = text
                .split("\n\n")
                .find(|t| t.starts_with(title))
                .unwrap_or_else(|| panic!("no {title} table: {key}"));
            let label = if field(3) == "gil" {
                "multithread + GIL"
            } else {
                field(3)
            };
            let row = table
                .lines()
                .find(|l| {
                    l.starts_with(&format!("{label} "))
                        && !(label == "multithread" && l.starts_with("multithread +"))
                })
                .unwrap_or_else(|| panic!("no row {label}: {key}"));
            let cells: Vec<&str> = row.split_whitespace().collect();
            match field(4) {
                "time" => (
                    cells[cells.len() - 3].parse::<f64>().unwrap() * 1e-3,
                    Kind::Time,
                ),
                "speedup" => (
                    cells[cells.len() - 1]
                        .trim_end_matches('x')
                        .parse()
                        .unwrap(),
                    Kind::Ratio,
                ),
                other => panic!("a timing figure mark with field {other}: {key}"),
            }
        }
        other => panic!("a figure mark from {other}, which no recorded run is: {key}"),
    }
}

/// A figure followed by a mark is the very value the mark names (and
/// `record.py` writes it again from each new recording).
#[test]
fn every_marked_figure_is_the_value_its_mark_names() {
    let mut wrong = Vec::new();
    let mut count = 0;
    for page in pages() {
        for (n, line) in prose(&page) {
            for (before, key) in marks_in(&line) {
                count += 1;
                let (value, kind) = marked(&key);
                let ok = if key.ends_with(" plain") {
                    // A bare number: the last one before the mark.
                    let number: String = before
                        .trim_end()
                        .chars()
                        .rev()
                        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ',')
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .filter(|c| *c != ',')
                        .collect();
                    let decimals = number.split('.').nth(1).map_or(0, |d| d.len() as i32);
                    number
                        .parse::<f64>()
                        .is_ok_and(|p| (value - p).abs() <= 0.5 * 10f64.powi(-decimals) + 1e-9)
                } else {
                    figures_in(&before, n).last().is_some_and(|figure| {
                        let (value, kind) = if figure.kind == Kind::Time && kind == Kind::Rate {
                            (1.0 / value, Kind::Time)
                        } else {
                            (value, kind)
                        };
                        matches(figure, value, kind)
                    })
                };
                if !ok {
                    wrong.push(format!("docs/{page}:{n}: the figure before <!-- fig {key} --> is not {value} ({kind:?})"));
                }
            }
        }
    }
    assert!(count > 0, "no figure marks found");
    assert!(
        wrong.is_empty(),
        "marked figures that differ from the recorded runs (run `python3 benches/python/record.py`):\n{}",
        wrong.join("\n")
    );
}
