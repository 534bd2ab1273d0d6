# Recipes for the course. Each one is a plain cargo command underneath;
# `just --list` shows them. Install just with `cargo install just`.

demos := "process_demo join_demo cpu_count_demo queue_demo timing_demo pool_demo shared_memory_demo lock_demo event_demo cluster_demo start_methods_demo pipe_demo async_join_demo sync_demo manager_demo"

# List the recipes.
default:
    @just --list

# Run one demo: `just demo lock_demo` (extra arguments go to the demo).
demo NAME *ARGS:
    cargo run -q -p {{NAME}} -- {{ARGS}}

# Run every demo in reading order, in release mode (timing_demo needs it);
# cluster_demo runs on 2 local processes, as `just cluster` does.
demos:
    #!/usr/bin/env bash
    set -euo pipefail
    for d in {{demos}}; do
        args=()
        if [ "$d" = cluster_demo ]; then args=(--local 2); fi
        echo "=== cargo run --release -p $d -- ${args[*]:-}"
        cargo run -q --release -p "$d" -- "${args[@]}"
    done

# The whole test suite (the README's command).
test:
    cargo test --workspace

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --check
    cargo clippy --workspace --all-targets -- -D warnings

# Everything CI runs.
ci:
    bash .ci/run

# The criterion benchmarks; the HTML report lands in target/criterion/report/index.html.
bench *ARGS:
    cargo bench -p mpbench {{ARGS}}

# CPython's multiprocessing beside mpcore, alternating, in one table with the targets (`--quick`: small sizes; `--svg FILE`: the ratios as a chart; `--record`: write docs/data/compare.json).
compare *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! command -v python3 >/dev/null 2>&1; then
        echo "just compare: python3 not found on PATH, so there is no Python side to compare." >&2
        echo "Install Python 3 (standard library only is needed); the Rust side alone:" >&2
        cargo build --release -q -p mpbench --bin compare
        for w in $(cargo run --release -q -p mpbench --bin compare -- --list); do
            cargo run --release -q -p mpbench --bin compare -- "$w"
        done
        exit 1
    fi
    python3 benches/python/compare.py {{ARGS}}

# Measure on a quiet machine and record the figures the chapters quote, in
# docs/data/ (benches/README.md): criterion, then the side-by-side, then
# criterion's medians, then chapter 5's runs of timing_demo. Takes about
# half an hour.
record:
    cargo bench -p mpbench
    python3 benches/python/compare.py --record
    python3 benches/python/record.py criterion
    python3 benches/python/record.py timing

# Compile and run every Rust block in docs/, then build the API docs.
docs:
    cargo test -p docs
    cargo doc --no-deps -p mpcore -p course

# The course as a book (mdbook, from docs/), built to target/book.
book:
    #!/usr/bin/env bash
    set -euo pipefail
    mdbook=mdbook
    if ! command -v mdbook >/dev/null 2>&1; then
        echo "just book: mdbook is not installed; installing it first with: cargo install mdbook --locked" >&2
        cargo install mdbook --locked
        # cargo installs into its own bin directory, which may not be on PATH.
        command -v mdbook >/dev/null 2>&1 || mdbook="${CARGO_HOME:-$HOME/.cargo}/bin/mdbook"
    fi
    "$mdbook" build docs
    echo "The book is built: open $(pwd)/target/book/index.html in a browser."

# Chapter 11: the Pool's map on timely workers in N local processes (`just cluster 3 -w2`).
cluster N="2" *ARGS:
    cargo run -q -p cluster_demo -- --local {{N}} {{ARGS}}
