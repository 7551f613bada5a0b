//! The `vfs` backend. (Being written: reports itself unavailable until it lands.)

use crate::driver::{Driver, DriverConfig, ProbeReport};
use crate::error::{Error, Result};

pub const NAME: &str = "vfs";

pub fn probe() -> ProbeReport {
    ProbeReport::unavailable(NAME, "backend not built yet")
}

/// Open (set up or adopt) the backend under `cfg.root/vfs`.
pub fn open(_cfg: &DriverConfig) -> Result<Box<dyn Driver>> {
    Err(Error::unavailable(NAME, "backend not built yet"))
}
