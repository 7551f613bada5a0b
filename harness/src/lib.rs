//! cowbench: which container storage driver should I use, and why? Measured.
//!
//! The harness: host probe, backing stores, OCI runtime, runner, results, report and the CLI.

pub mod cli;
pub mod container;
pub mod image;
pub mod lab;
pub mod host;
pub mod results;
pub mod clean;
pub mod runner;
pub mod claims;
pub mod report;
