//! The vision pipeline engine: reads a TOML pipeline, checks it into a graph of nodes, and
//! runs it as stages connected by bounded queues. The `engine` binary (src/main.rs) is the
//! command-line front end; this library is what it and the benchmarks use.

pub mod config;
pub mod diag;
pub mod graph;
pub mod plugin_host;
pub mod registry;
pub mod report;
pub mod runtime;
pub mod scaffold;
