//! Run results: the `run.json` schema, summary statistics and the atomic writer.

pub mod schema;
pub mod stats;
pub mod writer;

pub use schema::{Cell, CellStatus, Metric, RunDoc, RunParameters, RunStatus, Snapshot, SCHEMA_VERSION};
pub use writer::{new_run_id, ResultsWriter};
