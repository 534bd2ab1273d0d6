//! Benchmarks live in `benches/`; run them with `just bench` or
//! `cargo bench -p mpbench`. This library is empty on purpose: the package
//! exists to hold the benchmark targets.
