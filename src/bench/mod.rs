//! Performance benchmarks behind `videoagent bench`: each returns a serialisable report that
//! the CLI prints as a table and as JSON. Timings come from real runs, never from tests.

pub mod crash;
pub mod crash_train;
pub mod model;
pub mod reference;
pub mod ui;
pub mod world;

/// Threads this process may use, as the benchmarks report it.
pub fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}
