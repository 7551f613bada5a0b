//! The conformance suite every backend must pass. (Scenarios being written.)

pub mod fixture;
pub use fixture::{fixture, Fixture};
