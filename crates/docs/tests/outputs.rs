//! The chapters quote what their demos printed; this test checks that each
//! quoted line is one the demo can still print, so that a demo whose
//! output changes cannot leave an old transcript in its chapter.
//!
//! A quoted output is marked by the line before its fence:
//!
//! ```text
//! <!-- output of crates/NAME -->
//! <!-- output of crates/NAME/examples/FILE.rs, crates/course/src/logging.rs -->
//! <!-- output of crates/cluster_demo; also "awaiting connections" -->
//! ```
//!
//! (an HTML comment, which no renderer shows). The paths name the Rust
//! sources that print (a folder: every `.rs` file under it); `also` names
//! texts that come from elsewhere, a dependency say: a line that begins
//! with one, or a hole that holds one, is taken as it is.
//!
//! The demo's *shape* is its format strings: the literal text of every
//! `println!`, `format!`, `writeln!`, log macro and the like in those
//! sources, with each `{...}` a hole. Each line of the quoted output
//! (blank lines and `$ command` lines aside) must be one of them, filled
//! in. A hole takes a value (text without letters, one word, a quoted
//! string), a string literal of the sources, or another of the format
//! strings filled in the same way: so the words of every quoted line
//! come from the demo's own format strings and literals. Values (pids,
//! times, results) are free to differ from run to run; the words are not.
//!
//! What mpcore itself words, an error's message say, is in its sources:
//! a mark names `crates/mpcore/src` when a demo prints one, and the
//! `#[error("...")]` texts count as format strings.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

mod common;

use common::{DEMO_CHAPTERS, docs, included, workspace};

const MARK: &str = "<!-- output of ";

/// A piece of a format string.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Hole,
}

/// One line of a format string, as pieces.
#[derive(Debug, Clone)]
struct Pattern {
    pieces: Vec<Piece>,
}

impl Pattern {
    fn new(pieces: Vec<Piece>) -> Pattern {
        Pattern { pieces }
    }

    /// Whether its text is more than spaces: a pattern of holes and
    /// spaces alone (a table row's) would take any words, so it does not
    /// fill another's hole.
    fn separates(&self) -> bool {
        self.pieces
            .iter()
            .any(|piece| matches!(piece, Piece::Text(t) if !t.trim().is_empty()))
    }
}

/// The format strings of the sources, one pattern per line, and every
/// string literal (the texts a hole may be filled with).
struct Shape {
    patterns: Vec<Pattern>,
    literals: Vec<String>,
    also: Vec<String>,
    /// What `fills_hole` found for a text at a depth.
    holes: RefCell<HashMap<(String, usize), bool>>,
}

const MACROS: [&str; 15] = [
    "#[error(",
    "println!(",
    "print!(",
    "eprintln!(",
    "eprint!(",
    "writeln!(",
    "write!(",
    "format!(",
    "format_args!(",
    "info!(",
    "warn!(",
    "error!(",
    "debug!(",
    "panic!(",
    "bail!(",
];

/// The Rust string literals in `source`, in order, each with its offset
/// in `source`: plain ones with their escapes undone, and raw ones.
fn string_literals(source: &str) -> Vec<(usize, String)> {
    let bytes = source.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            // A comment runs to the end of its line.
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            // A character literal, so that '"' is not taken for a string;
            // a lifetime ('a) has no closing quote within two characters.
            b'\'' => {
                let rest = &source[i + 1..];
                let close = if rest.starts_with('\\') {
                    rest[2..].find('\'').map(|at| at + 2)
                } else {
                    rest.chars().next().map(char::len_utf8)
                };
                match close {
                    Some(at) if rest[at..].starts_with('\'') => i += at + 2,
                    _ => i += 1,
                }
            }
            b'r' if (bytes.get(i + 1) == Some(&b'"') || bytes.get(i + 1) == Some(&b'#'))
                && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_')) =>
            {
                let hashes = source[i + 1..].bytes().take_while(|&b| b == b'#').count();
                let open = i + 1 + hashes;
                if bytes.get(open) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close = format!("\"{}", "#".repeat(hashes));
                let end = source[open + 1..]
                    .find(&close)
                    .map_or(source.len(), |at| open + 1 + at);
                found.push((i, source[open + 1..end].to_owned()));
                i = end + close.len();
            }
            b'"' => {
                let start = i;
                let mut text = String::new();
                let mut chars = source[i + 1..].char_indices();
                let mut end = source.len();
                while let Some((at, c)) = chars.next() {
                    match c {
                        '"' => {
                            end = i + 1 + at + 1;
                            break;
                        }
                        '\\' => match chars.next() {
                            Some((_, 'n')) => text.push('\n'),
                            Some((_, 't')) => text.push('\t'),
                            Some((_, '\n')) => {
                                // A line continuation: the break and the
                                // next line's indentation are not text.
                                let rest = chars.as_str();
                                let skip = rest.len() - rest.trim_start().len();
                                for _ in rest[..skip].chars() {
                                    chars.next();
                                }
                            }
                            Some((_, other)) => text.push(other),
                            None => {}
                        },
                        other => text.push(other),
                    }
                }
                found.push((start, text));
                i = end;
            }
            _ => i += 1,
        }
    }
    found
}

/// A format string's lines as patterns: `{{` and `}}` are braces, any
/// other `{...}` a hole.
fn patterns(format: &str) -> Vec<Pattern> {
    format
        .split('\n')
        .map(|line| {
            let mut pieces = Vec::new();
            let mut text = String::new();
            let mut chars = line.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '{' if chars.peek() == Some(&'{') => {
                        chars.next();
                        text.push('{');
                    }
                    '}' if chars.peek() == Some(&'}') => {
                        chars.next();
                        text.push('}');
                    }
                    '{' => {
                        for c in chars.by_ref() {
                            if c == '}' {
                                break;
                            }
                        }
                        if !text.is_empty() {
                            pieces.push(Piece::Text(std::mem::take(&mut text)));
                        }
                        pieces.push(Piece::Hole);
                    }
                    c => text.push(c),
                }
            }
            if !text.is_empty() {
                pieces.push(Piece::Text(text));
            }
            Pattern::new(pieces)
        })
        .collect()
}

fn rust_files(path: &Path, into: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for entry in entries {
            rust_files(&entry, into);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        into.push(path.to_owned());
    }
}

/// The shape of what `sources` print (see the module's doc).
fn shape(sources: &[String], also: Vec<String>) -> Shape {
    let mut files = Vec::new();
    for source in sources {
        let path = workspace().join(source);
        assert!(
            path.exists(),
            "an output mark names {source}, which does not exist"
        );
        rust_files(&path, &mut files);
    }
    // What Rust itself prints around a program's own lines: an error that
    // `main` returned.
    let mut shape = Shape {
        patterns: patterns("Error: {}"),
        literals: Vec::new(),
        also,
        holes: RefCell::default(),
    };
    for file in files {
        let source = fs::read_to_string(&file).unwrap();
        let literals = string_literals(&source);
        // The first literal inside each printing macro's parentheses is its
        // format string.
        for name in MACROS {
            for (at, _) in source.match_indices(name) {
                let before = source[..at].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                let open = at + name.len();
                let close = closing_paren(&source, open);
                if let Some((_, format)) = literals
                    .iter()
                    .find(|(start, _)| *start >= open && *start < close)
                {
                    shape.patterns.extend(patterns(format));
                }
            }
        }
        shape
            .literals
            .extend(literals.into_iter().map(|(_, text)| text.trim().to_owned()));
    }
    // What the mark names as coming from elsewhere fills a hole too.
    let also = shape.also.clone();
    shape.literals.extend(also);
    shape
}

/// The offset of the `)` that closes the parenthesis opened before `open`.
fn closing_paren(source: &str, open: usize) -> usize {
    let mut depth = 1;
    let mut in_string = false;
    let mut escaped = false;
    for (at, c) in source[open..].char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth == 0 {
                    return open + at;
                }
            }
            _ => {}
        }
    }
    source.len()
}

impl Shape {
    /// Whether `line` is one of the patterns filled in.
    fn allows(&self, line: &str) -> bool {
        let line = line.trim_end();
        self.also
            .iter()
            .any(|prefix| line.starts_with(prefix.as_str()))
            || self.patterns.iter().any(|p| self.fills(p, line, 0))
    }

    /// Whether `line` is `pattern` with its holes filled as the module's
    /// doc says; `depth` counts the format strings this one is inside.
    fn fills(&self, pattern: &Pattern, line: &str, depth: usize) -> bool {
        // A cheap look first: the text before the first hole and after
        // the last must be there.
        if let Some(Piece::Text(first)) = pattern.pieces.first() {
            if !line.starts_with(first.as_str()) {
                return false;
            }
        }
        if let Some(Piece::Text(last)) = pattern.pieces.last() {
            if !line.trim_end().ends_with(last.trim_end()) {
                return false;
            }
        }
        let texts_there = pattern.pieces.iter().all(|piece| match piece {
            Piece::Text(text) => line.contains(text.trim_end()),
            Piece::Hole => true,
        });
        if !texts_there {
            return false;
        }
        let mut memo = HashMap::new();
        self.matches(pattern, 0, line, 0, depth, &mut memo)
    }

    fn matches(
        &self,
        pattern: &Pattern,
        piece: usize,
        line: &str,
        at: usize,
        depth: usize,
        memo: &mut HashMap<(usize, usize), bool>,
    ) -> bool {
        if let Some(&known) = memo.get(&(piece, at)) {
            return known;
        }
        let rest = &line[at..];
        let result = match pattern.pieces.get(piece) {
            // Trailing spaces of a format string (padding) need not be kept.
            None => rest.trim().is_empty(),
            Some(Piece::Text(text)) => {
                let last = piece + 1 == pattern.pieces.len();
                if last && rest.trim_end() == text.trim_end() {
                    true
                } else {
                    rest.starts_with(text.as_str())
                        && self.matches(pattern, piece + 1, line, at + text.len(), depth, memo)
                }
            }
            Some(Piece::Hole) => {
                // A hole between quotes (`"{e}"`) holds a quoted value.
                let text_at = |i: Option<usize>| match i.and_then(|i| pattern.pieces.get(i)) {
                    Some(Piece::Text(text)) => Some(text.as_str()),
                    _ => None,
                };
                let quoted = text_at(piece.checked_sub(1)).is_some_and(|t| t.ends_with('"'))
                    && text_at(Some(piece + 1)).is_some_and(|t| t.starts_with('"'));
                rest.char_indices()
                    .map(|(i, _)| i)
                    .chain([rest.len()])
                    .any(|end| {
                        (quoted && !rest[..end].contains('"')
                            || self.fills_hole(&rest[..end], depth))
                            && self.matches(pattern, piece + 1, line, at + end, depth, memo)
                    })
            }
        };
        memo.insert((piece, at), result);
        result
    }

    /// What a hole takes: a value (no letters, one word, a quoted string),
    /// a string literal of the sources, or another format string filled in.
    fn fills_hole(&self, text: &str, depth: usize) -> bool {
        let text = text.trim();
        let key = (text.to_owned(), depth);
        if let Some(&known) = self.holes.borrow().get(&key) {
            return known;
        }
        let result = self.fills_hole_uncached(text, depth);
        self.holes.borrow_mut().insert(key, result);
        result
    }

    fn fills_hole_uncached(&self, text: &str, depth: usize) -> bool {
        // Two spaces in a row are a table's padding: a hole that spans
        // them spans two columns.
        if text.contains("  ") {
            return false;
        }
        text.is_empty()
            || !text.chars().any(char::is_alphabetic)
            || !text.contains(char::is_whitespace)
            || (text.len() >= 2 && text.starts_with('"') && text.ends_with('"'))
            || self.literals.iter().any(|l| l == text)
            || (depth < 3
                && self
                    .patterns
                    .iter()
                    .filter(|p| p.separates())
                    .any(|p| self.fills(p, text, depth + 1)))
    }
}

/// A quoted output: the chapter's line of its first line, its sources and
/// its lines.
struct Quoted {
    line: usize,
    sources: Vec<String>,
    also: Vec<String>,
    lines: Vec<String>,
}

fn quoted(page: &str) -> Vec<Quoted> {
    let text = fs::read_to_string(docs().join(page)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim().strip_prefix(MARK) else {
            continue;
        };
        let mark = rest
            .strip_suffix("-->")
            .unwrap_or_else(|| panic!("{page}:{}: a mark ends with -->", i + 1))
            .trim();
        let (paths, also) = mark.split_once("; also ").unwrap_or((mark, ""));
        let sources = paths.split(',').map(|p| p.trim().to_owned()).collect();
        let also = also
            .split('"')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        let fence = lines.get(i + 1).map(|l| l.trim()).unwrap_or_default();
        assert!(
            fence == "```text" || fence == "```console",
            "{page}:{}: an output mark stands right before a ```text or ```console block, not {fence:?}",
            i + 1
        );
        // A recorded output is included from docs/data/ (mdbook's
        // `{{#include data/FILE}}`): its lines are the file's.
        let body = lines[i + 2..]
            .iter()
            .take_while(|l| l.trim() != "```")
            .flat_map(|l| match included(l) {
                Some(text) => text
                    .unwrap_or_else(|e| panic!("{page}:{}: {e}", i + 1))
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
                None => vec![l.to_string()],
            })
            .collect();
        found.push(Quoted {
            line: i + 3,
            sources,
            also,
            lines: body,
        });
    }
    found
}

/// Every quoted line that its sources cannot print, with where it is.
fn misfits(page: &str) -> (usize, Vec<String>) {
    let blocks = quoted(page);
    let mut wrong = Vec::new();
    for block in &blocks {
        let shape = shape(&block.sources, block.also.clone());
        for (n, line) in block.lines.iter().enumerate() {
            if line.trim().is_empty() || line.starts_with("$ ") {
                continue;
            }
            if !shape.allows(line) {
                wrong.push(format!(
                    "docs/{page}:{}: {line:?} is not printed by {}",
                    block.line + n,
                    block.sources.join(", ")
                ));
            }
        }
    }
    (blocks.len(), wrong)
}

#[test]
fn every_quoted_output_is_one_its_demo_prints() {
    let mut wrong = Vec::new();
    for page in DEMO_CHAPTERS {
        let (blocks, misfits) = misfits(page);
        assert!(blocks > 0, "{page} marks no quoted output of its demo");
        wrong.extend(misfits);
    }
    assert!(
        wrong.is_empty(),
        "quoted outputs that the demos no longer print (run the demo and quote it again):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn a_changed_word_is_caught_and_a_changed_value_is_not() {
    let source = r#"
        println!("== who ran what ==");
        println!("worker {pid} ran x = {xs:?}");
        let time = format!("{:.3} ms", 1.5);
        println!("{:<18} {:>7} {:>14}", "way", "workers", "time");
        println!("{name:<18} {workers:>7} {time:>14}");
        writeln!(out, "{}: {}", "mutex", outcome);
        let outcome = format!("the child returned {value}");
    "#;
    let literals = string_literals(source);
    let mut shape = Shape {
        patterns: Vec::new(),
        literals: literals.iter().map(|(_, t)| t.clone()).collect(),
        also: vec!["awaiting connections".into()],
        holes: RefCell::default(),
    };
    for name in MACROS {
        for (at, _) in source.match_indices(name) {
            let open = at + name.len();
            let close = closing_paren(source, open);
            if let Some((_, f)) = literals.iter().find(|(s, _)| *s >= open && *s < close) {
                shape.patterns.extend(patterns(f));
            }
        }
    }
    for line in [
        "== who ran what ==",
        "worker 17403 ran x = [0, 5, 6]",
        "way                workers           time",
        "multicore                2      241.311 ms",
        "mutex: the child returned 42",
        "awaiting connections (at 0/1)",
    ] {
        assert!(shape.allows(line), "{line:?} should be allowed");
    }
    for line in [
        "== who ran which ==",
        "worker 17403 did x = [0, 5, 6]",
        "mutex: the child sent 42",
        "multicore fast            2      241.311 ms",
    ] {
        assert!(!shape.allows(line), "{line:?} should be refused");
    }
}

#[test]
fn string_literals_are_read_as_rust_reads_them() {
    let source = "let a = \"x {y} \\\"z\\\"\"; let c = '\"'; // \"not this\"\n\
                  let b = r#\"raw \"q\"\"#; let d = \"one \\\n        two\";";
    let found: Vec<String> = string_literals(source)
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert_eq!(found, ["x {y} \"z\"", "raw \"q\"", "one two"]);
}
