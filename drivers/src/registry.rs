//! Every backend cowbench knows, probed and opened by name.
//!
//! Like youki's cgroup manager selection: the probe looks at the host and says which
//! implementation would run (kernel driver or stand-in) or why none can.

use crate::driver::{Driver, DriverConfig, ProbeReport};
use crate::error::{Error, Result};

/// Every backend, in the order reports list them.
pub const DRIVERS: [&str; 6] = ["overlay", "aufs", "btrfs", "devicemapper", "zfs", "vfs"];

/// Probe one backend on this host.
pub fn probe(name: &str) -> Result<ProbeReport> {
    Ok(match name {
        "overlay" => crate::overlay::probe(),
        "aufs" => crate::aufs::probe(),
        "btrfs" => crate::btrfs::probe(),
        "devicemapper" => crate::devicemapper::probe(),
        "zfs" => crate::zfs::probe(),
        "vfs" => crate::vfs::probe(),
        other => return Err(unknown(other)),
    })
}

/// Probe every backend.
pub fn probe_all() -> Vec<ProbeReport> {
    DRIVERS.iter().map(|n| probe(n).expect("known driver")).collect()
}

/// Open (setting up or adopting its backing store under `cfg.root/<name>`) one backend.
pub fn open(name: &str, cfg: &DriverConfig) -> Result<Box<dyn Driver>> {
    let report = probe(name)?;
    if !report.available {
        return Err(Error::unavailable(name, report.reason.unwrap_or_else(|| "unknown reason".into())));
    }
    Ok(match name {
        "overlay" => crate::overlay::open(cfg)?,
        "aufs" => crate::aufs::open(cfg)?,
        "btrfs" => crate::btrfs::open(cfg)?,
        "devicemapper" => crate::devicemapper::open(cfg)?,
        "zfs" => crate::zfs::open(cfg)?,
        "vfs" => crate::vfs::open(cfg)?,
        other => return Err(unknown(other)),
    })
}

fn unknown(name: &str) -> Error {
    Error::config(name, format!("unknown driver; known drivers: {}", DRIVERS.join(", ")))
}
