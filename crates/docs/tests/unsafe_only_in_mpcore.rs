//! `unsafe` code lives in `crates/mpcore` (and in `crates/mpcore-tests`, the
//! tests that check its promises), and in `crates/course` where a published crate or a bare
//! system call needs it, each block behind a `// SAFETY:` note. The demos,
//! the benchmarks, the chapters and this crate use safe calls; the
//! published crates' `unsafe` calls (raw_sync's, shared_memory's) are made
//! in `course::published`.
//!
//! This test reads every `.rs` file and every Rust block of every `.md`
//! file of the workspace outside those crates, and fails on `unsafe` code
//! there: a block, a function, an impl, a trait or an extern block. The
//! word in a comment or in prose is fine.

use std::fs;
use std::path::{Path, PathBuf};

/// The keyword, spelled so that this file does not hold it as code.
const KEYWORD: &str = concat!("un", "safe");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether `code` (one line of Rust, comments removed) uses the keyword
/// as code: before `{`, `fn`, `impl`, `trait` or `extern`.
fn is_unsafe_code(code: &str) -> bool {
    code.match_indices(KEYWORD).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            return false;
        }
        let after = code[at + KEYWORD.len()..].trim_start();
        after.starts_with('{')
            || ["fn", "impl", "trait", "extern"].iter().any(|word| {
                after
                    .strip_prefix(word)
                    .is_some_and(|rest| rest.starts_with([' ', '<', '"']))
            })
    })
}

/// A line of Rust without its `//` comment (a `//` inside a string is
/// taken for a comment too, which only makes the check miss, never
/// accuse).
fn code_of(line: &str) -> &str {
    line.split("//").next().unwrap()
}

/// Whether a fence line opens a Rust block, by rustdoc's rules (the
/// chapters are compiled as doc comments): ```` ```rust ````, a bare
/// ```` ``` ````, or one with rustdoc's attributes alone
/// (```` ```compile_fail ````).
fn opens_rust(fence: &str) -> bool {
    const RUSTDOC: [&str; 7] = [
        "rust",
        "ignore",
        "no_run",
        "compile_fail",
        "should_panic",
        "edition2021",
        "edition2024",
    ];
    let lang = fence.trim_start_matches('`').trim();
    let first = lang.split([',', ' ']).next().unwrap_or_default();
    first.is_empty() || RUSTDOC.contains(&first)
}

/// The numbers of the `(number, line)`s of Markdown that hold `unsafe`
/// code inside a Rust block.
fn in_markdown<'a>(lines: impl Iterator<Item = (usize, &'a str)>) -> Vec<usize> {
    let mut found = Vec::new();
    let mut in_rust = None;
    for (number, line) in lines {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            in_rust = match in_rust {
                None => Some(opens_rust(trimmed)),
                Some(_) => None,
            };
            continue;
        }
        // A hidden line (`# ...`) is compiled too.
        let code = trimmed.strip_prefix("# ").unwrap_or(trimmed);
        if in_rust == Some(true) && is_unsafe_code(code_of(code)) {
            found.push(number);
        }
    }
    found
}

/// The lines of a `.rs` file that hold `unsafe` code: in code, and in the
/// Rust blocks of its doc comments.
fn in_rust_file(text: &str) -> Vec<usize> {
    let mut found: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| is_unsafe_code(code_of(line)))
        .map(|(i, _)| i + 1)
        .collect();
    let docs = text.lines().enumerate().filter_map(|(i, line)| {
        let trimmed = line.trim_start();
        let doc = trimmed
            .strip_prefix("///")
            .or_else(|| trimmed.strip_prefix("//!"))?;
        Some((i + 1, doc))
    });
    found.extend(in_markdown(docs));
    found.sort_unstable();
    found
}

/// The crates where `unsafe` code may be.
const ALLOWED: [&str; 3] = ["crates/mpcore", "crates/mpcore-tests", "crates/course"];

/// Every `.rs` and `.md` file under `dir`, outside the [`ALLOWED`] crates,
/// the build's `target` and hidden directories.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            let skip = name.starts_with('.')
                || name == "target"
                || ALLOWED.iter().any(|crate_dir| path.ends_with(crate_dir));
            if !skip {
                files(&path, out);
            }
        } else if name.ends_with(".rs") || name.ends_with(".md") {
            out.push(path);
        }
    }
}

#[test]
fn no_unsafe_code_outside_mpcore() {
    let root = workspace().canonicalize().unwrap();
    let mut all = Vec::new();
    files(&root, &mut all);
    // The files that held such code before mpcore::published (now
    // course::published) did.
    for known in [
        "crates/lock_demo/examples/raw_sync.rs",
        "crates/event_demo/examples/raw_sync_events.rs",
        "crates/shared_memory_demo/examples/shared_memory_crate.rs",
        "benches/src/published.rs",
        "docs/07-shared-memory.md",
        "docs/08-lock.md",
        "docs/09-events-producer-consumer.md",
    ] {
        assert!(
            all.contains(&root.join(known)),
            "{known} was not read: is the root right?"
        );
    }
    let mut offenders = Vec::new();
    for path in &all {
        let text = fs::read_to_string(path).unwrap();
        let lines = if path.extension().is_some_and(|e| e == "rs") {
            in_rust_file(&text)
        } else {
            in_markdown(text.lines().enumerate().map(|(i, l)| (i + 1, l)))
        };
        let shown = path.strip_prefix(&root).unwrap().display().to_string();
        offenders.extend(lines.into_iter().map(|n| format!("{shown}:{n}")));
    }
    assert!(
        offenders.is_empty(),
        "{KEYWORD} code outside {ALLOWED:?} (make the call there, behind a safe \
         function and a // SAFETY: note, e.g. in course::published):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_check_finds_unsafe_code_and_lets_the_word_be() {
    let k = KEYWORD;
    for code in [
        format!("    let x = {k} {{ f() }};"),
        format!("{k}{{ f() }}"),
        format!("pub {k} fn f() {{}}"),
        format!("{k} impl Send for X {{}}"),
        format!("{k} extern \"C\" {{"),
        format!("{k} trait T {{}}"),
    ] {
        assert_eq!(in_rust_file(&code), [1], "{code}");
    }
    for fine in [
        format!("// SAFETY: the {k} block above"),
        format!("//! raw_sync's calls are `{k}`: they take raw pointers"),
        format!("let word = \"{k}\";"),
        format!("let not_{k} = 1;"),
        format!("fn f() {{}} // {k} {{ in a comment }}"),
    ] {
        assert!(in_rust_file(&fine).is_empty(), "{fine}");
    }
    let doc = format!("//! ```\n//! {k} {{ f() }}\n//! ```\n//! ```text\n//! {k} {{ }}\n//! ```\n");
    assert_eq!(in_rust_file(&doc), [2]);
    let chapter = format!(
        "Every call is `{k}`.\n\n```rust\nlet a = 1;\n# {k} {{ f() }}\n```\n\n```console\n{k} {{\n```\n\n```compile_fail\n{k} fn f() {{}}\n```\n"
    );
    assert_eq!(
        in_markdown(chapter.lines().enumerate().map(|(i, l)| (i + 1, l))),
        [5, 13]
    );
}
