//! Every backend cowbench knows, probed and opened by name: the one table of backends.
//!
//! Like youki's cgroup manager selection: the probe looks at the host and says which
//! implementation would run (kernel driver or stand-in) or why none can.

use crate::driver::{Driver, DriverConfig, ProbeReport};
use crate::error::{Error, Result};
use crate::ledger::ResourceKind;

/// One backend: how to probe it and how to open it.
struct Entry {
    name: &'static str,
    probe: fn() -> ProbeReport,
    open: fn(&DriverConfig) -> Result<Box<dyn Driver>>,
    /// Unless given a device, dataset or thin pool, the store is a file under the root.
    loop_backed_by_default: bool,
}

/// Every backend, in the order reports list them.
const TABLE: [Entry; 6] = [
    Entry { name: "overlay", probe: crate::overlay::probe, open: crate::overlay::open, loop_backed_by_default: false },
    Entry { name: "aufs", probe: crate::aufs::probe, open: crate::aufs::open, loop_backed_by_default: false },
    Entry { name: "btrfs", probe: crate::btrfs::probe, open: crate::btrfs::open, loop_backed_by_default: true },
    Entry {
        name: "devicemapper",
        probe: crate::devicemapper::probe,
        open: crate::devicemapper::open,
        loop_backed_by_default: true,
    },
    Entry { name: "zfs", probe: crate::zfs::probe, open: crate::zfs::open, loop_backed_by_default: true },
    Entry { name: "vfs", probe: crate::vfs::probe, open: crate::vfs::open, loop_backed_by_default: false },
];

/// Every backend's name, in the order reports list them.
pub const DRIVERS: [&str; 6] = [TABLE[0].name, TABLE[1].name, TABLE[2].name, TABLE[3].name, TABLE[4].name, TABLE[5].name];

fn entry(name: &str) -> Result<&'static Entry> {
    TABLE.iter().find(|e| e.name == name).ok_or_else(|| unknown(name))
}

/// Probe one backend on this host.
pub fn probe(name: &str) -> Result<ProbeReport> {
    let e = entry(name)?;
    let mut r = (e.probe)();
    r.loop_backed_by_default = e.loop_backed_by_default;
    Ok(r)
}

/// Probe every backend.
pub fn probe_all() -> Vec<ProbeReport> {
    DRIVERS.iter().map(|n| probe(n).expect("known driver")).collect()
}

/// Open (setting up or adopting its backing store under `cfg.root/<name>`) one backend.
pub fn open(name: &str, cfg: &DriverConfig) -> Result<Box<dyn Driver>> {
    let e = entry(name)?;
    let report = probe(name)?;
    if !report.available {
        return Err(Error::unavailable(name, report.reason.unwrap_or_else(|| "unknown reason".into())));
    }
    (e.open)(cfg)
}

/// A host-wide object a backend left behind and [`release_named`] released (or failed to).
#[derive(Debug)]
pub struct Released {
    pub kind: ResourceKind,
    /// Pool or device-mapper name.
    pub id: String,
    pub result: Result<()>,
}

/// Release the host-wide objects named for one root that no open of a backend adopts (a
/// process died between creating them and saving its state): zpools (`kind` Pool) or
/// device-mapper devices (`kind` Dm) whose names start with one of `prefixes`, through the
/// backend that makes them. Other kinds have nothing host-wide to release.
pub fn release_named(kind: ResourceKind, prefixes: &[String]) -> Vec<Released> {
    let found = match kind {
        ResourceKind::Pool => crate::zfs::release_pools(prefixes),
        ResourceKind::Dm => crate::devicemapper::release_devices(prefixes),
        _ => Vec::new(),
    };
    found.into_iter().map(|(id, result)| Released { kind, id, result }).collect()
}

fn unknown(name: &str) -> Error {
    Error::config(name, format!("unknown driver; known drivers: {}", DRIVERS.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backend_probes_under_its_own_name() {
        for r in probe_all() {
            assert!(DRIVERS.contains(&r.name.as_str()), "{}", r.name);
        }
        assert!(probe("btrfs").unwrap().loop_backed_by_default);
        assert!(!probe("overlay").unwrap().loop_backed_by_default);
        assert!(probe("ext4").is_err());
    }
}
