//! The book's table of contents and its links, checked against the files:
//! a new chapter cannot be left out of `SUMMARY.md` (mdbook would build
//! without it, silently), nor out of the doc tests, and no link in a
//! chapter points at a file that the built book does not have.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

mod common;

use common::docs;

/// The chapter files, `NN-name.md`, in `docs/`.
fn chapters() -> BTreeSet<String> {
    let found: BTreeSet<String> = fs::read_dir(docs())
        .expect("docs/ is readable")
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| {
            name.ends_with(".md") && name.len() > 3 && name[..2].bytes().all(|b| b.is_ascii_digit())
        })
        .collect();
    assert!(found.len() >= 12, "too few chapters found: {found:?}");
    found
}

/// The targets of the Markdown links `[text](target)` in `text`, without
/// any `#anchor`; web addresses and pure anchors are left out.
fn link_targets(text: &str) -> Vec<&str> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .map(|target| target.split('#').next().unwrap())
        .filter(|target| !target.is_empty() && !target.contains("://"))
        .collect()
}

#[test]
fn summary_lists_every_chapter_and_only_files_that_exist() {
    let summary = fs::read_to_string(docs().join("SUMMARY.md")).unwrap();
    let listed: Vec<&str> = link_targets(&summary);
    for chapter in chapters() {
        assert!(
            listed.contains(&chapter.as_str()),
            "docs/{chapter} is not in docs/SUMMARY.md: add it, or the book leaves it out"
        );
    }
    assert!(
        listed.contains(&"README.md"),
        "the index page is not in SUMMARY.md"
    );
    for target in &listed {
        assert!(
            docs().join(target).is_file(),
            "SUMMARY.md lists {target}, which does not exist"
        );
    }
    let unique: BTreeSet<&&str> = listed.iter().collect();
    assert_eq!(
        unique.len(),
        listed.len(),
        "SUMMARY.md lists a file twice: {listed:?}"
    );
}

#[test]
fn every_chapter_is_compiled_by_the_docs_crate() {
    let lib = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    for chapter in chapters() {
        assert!(
            lib.contains(&format!("include_str!(\"../../../docs/{chapter}\")")),
            "docs/{chapter} is not included in crates/docs/src/lib.rs, so its Rust blocks are not tested"
        );
    }
}

/// The book is built from `docs/` alone, so a link from a chapter to a
/// file outside it (a crate's source, say) would be dead in the book
/// while it works in the repository. Chapters name source files as code
/// (`benches/src/lib.rs`) instead: readers of the book and of the plain
/// files have the same repository beside them.
#[test]
fn links_in_chapters_stay_inside_the_book_and_resolve() {
    let mut pages = chapters();
    pages.insert("README.md".to_owned());
    for page in pages {
        let text = fs::read_to_string(docs().join(&page)).unwrap();
        for target in link_targets(&text) {
            assert!(
                !target.starts_with("..") && !target.starts_with('/'),
                "docs/{page} links to {target}, outside docs/: the built book will not have it"
            );
            assert!(
                docs().join(target).is_file(),
                "docs/{page} links to {target}, which does not exist"
            );
        }
    }
}
