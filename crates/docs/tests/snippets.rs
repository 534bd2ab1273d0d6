//! The chapters show their demo's code, and the doc tests compile those
//! blocks; this test checks that they are the demo's code, so that a
//! chapter cannot drift from the program a reader runs.
//!
//! A block is marked as the demo's by the line before its fence:
//!
//! ```text
//! <!-- from crates/NAME/src/main.rs -->
//! ```
//!
//! (an HTML comment, which no renderer shows). Each paragraph of the
//! block, a run of lines without a blank one, must appear in that file as
//! the same lines in the same order; indentation aside, since the chapter
//! lifts code out of `main`. Lines hidden from the reader (`# ...`), which
//! only make the block compile as a doc test, are left out, and end a
//! paragraph: what the chapter skips there need not be in the demo.

use std::fs;
mod common;

use common::{DEMO_CHAPTERS, workspace};

const MARK: &str = "<!-- from ";

/// A block marked as the demo's: the file it is from, its line in the
/// chapter, and its lines.
struct Snippet {
    source: String,
    line: usize,
    lines: Vec<String>,
}

fn snippets(chapter: &str) -> Vec<Snippet> {
    let text = fs::read_to_string(workspace().join("docs").join(chapter)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim().strip_prefix(MARK) else {
            continue;
        };
        let source = rest
            .strip_suffix("-->")
            .unwrap_or_else(|| panic!("{chapter}:{}: a mark ends with -->", i + 1))
            .trim()
            .to_owned();
        let fence = lines.get(i + 1).map(|l| l.trim()).unwrap_or_default();
        assert!(
            fence.starts_with("```rust"),
            "{chapter}:{}: a mark stands right before a ```rust block, not {fence:?}",
            i + 1
        );
        // A hidden line ends a paragraph: the chapter leaves something
        // out there.
        let body = lines[i + 2..]
            .iter()
            .take_while(|l| l.trim() != "```")
            .map(|l| {
                if is_hidden(l) {
                    String::new()
                } else {
                    l.to_string()
                }
            })
            .collect();
        found.push(Snippet {
            source,
            line: i + 3,
            lines: body,
        });
    }
    found
}

/// rustdoc's hidden lines: `#` alone or followed by a space.
fn is_hidden(line: &str) -> bool {
    let t = line.trim_start();
    t == "#" || t.starts_with("# ")
}

/// Where `paragraph` appears in `source` as consecutive lines, indentation
/// aside.
fn find(source: &[&str], paragraph: &[&str]) -> Option<usize> {
    source.windows(paragraph.len()).position(|window| {
        window
            .iter()
            .zip(paragraph)
            .all(|(s, p)| s.trim() == p.trim())
    })
}

fn check(chapter: &str) -> usize {
    let found = snippets(chapter);
    for snippet in &found {
        let source = fs::read_to_string(workspace().join(&snippet.source))
            .unwrap_or_else(|e| panic!("{chapter}: cannot read {}: {e}", snippet.source));
        let source: Vec<&str> = source.lines().collect();
        let mut start = snippet.line;
        for paragraph in snippet.lines.split(|l| l.trim().is_empty()) {
            if !paragraph.is_empty() {
                let paragraph: Vec<&str> = paragraph.iter().map(String::as_str).collect();
                assert!(
                    find(&source, &paragraph).is_some(),
                    "{chapter}, the block at line {}: these lines are not in {}:\n{}",
                    start,
                    snippet.source,
                    paragraph.join("\n")
                );
            }
            start += paragraph.len() + 1;
        }
    }
    found.len()
}

#[test]
fn every_demo_chapter_shows_its_demos_code_as_it_is() {
    for chapter in DEMO_CHAPTERS {
        assert!(
            check(chapter) > 0,
            "{chapter} marks no block as its demo's code"
        );
    }
}

#[test]
fn a_changed_line_is_caught() {
    let source = [
        "fn main() {",
        "    let x = 1;",
        "    println!(\"{x}\");",
        "}",
    ];
    assert_eq!(
        find(&source, &["let x = 1;", "println!(\"{x}\");"]),
        Some(1)
    );
    assert_eq!(find(&source, &["let x = 2;", "println!(\"{x}\");"]), None);
    // The same lines in another order are not the demo's code either.
    assert_eq!(find(&source, &["println!(\"{x}\");", "let x = 1;"]), None);
}
