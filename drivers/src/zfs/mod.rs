//! The `zfs` backend. (Being written: reports itself unavailable until it lands.)

pub mod cmd;

use crate::driver::{Driver, DriverConfig, ProbeReport};
use crate::error::{Error, Result};

pub const NAME: &str = "zfs";

pub fn probe() -> ProbeReport {
    ProbeReport::unavailable(NAME, "backend not built yet")
}

/// Open (set up or adopt) the backend under `cfg.root/zfs`.
pub fn open(_cfg: &DriverConfig) -> Result<Box<dyn Driver>> {
    Err(Error::unavailable(NAME, "backend not built yet"))
}
