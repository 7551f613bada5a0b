//! Executor of `density`.

use cowbench_workloads::Params;

use super::exec::{CellExec, Session, SetupError};

pub fn setup<'a>(_s: &'a Session, _params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
    Err(SetupError::Skip("density needs the container runtime".into()))
}
