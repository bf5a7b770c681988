//! Faregate's benchmarks live in `benches/`; this library is empty. Run them with
//! `cargo bench -p faregate-benches`. Every figure is reported beside a baseline measured in the
//! same run (see docs/benchmarks.md).
