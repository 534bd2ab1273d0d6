//! What the docs tests share: where the workspace and the chapters are,
//! which chapters go with a demo, and mdbook's `{{#include FILE}}`.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

/// Every chapter that goes with a demo crate.
pub const DEMO_CHAPTERS: [&str; 14] = [
    "01-process-basics.md",
    "02-ordered-join.md",
    "03-cpu-count.md",
    "04-queue.md",
    "05-timing-comparison.md",
    "06-pool.md",
    "07-shared-memory.md",
    "08-lock.md",
    "09-events-producer-consumer.md",
    "11-beyond-one-machine.md",
    "12-start-methods.md",
    "13-pipes-and-connections.md",
    "14-synchronisation.md",
    "15-managers.md",
];

/// The workspace's root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The book's folder, `docs/`.
pub fn docs() -> PathBuf {
    workspace().join("docs")
}

/// The text that an mdbook `{{#include FILE}}` line stands for (FILE
/// relative to `docs/`), or `None` for any other line.
pub fn included(line: &str) -> Option<Result<String, String>> {
    let rest = line.trim().strip_prefix("{{#include ")?;
    let file = rest.trim_end_matches("}}").trim();
    Some(fs::read_to_string(docs().join(file)).map_err(|e| format!("{file}: {e}")))
}
