//! The OpenZFS kernel module with a private userland, and its pool vdev.
//!
//! Where the OpenZFS module is loaded but its userland is not installed system-wide (inside
//! `scripts/vm`, whose host keeps zfs-fuse: Debian's `zfsutils-linux` conflicts with
//! `zfs-fuse`), `COWBENCH_OPENZFS_PREFIX` names an unpacked userland (made by
//! `scripts/vm.d/openzfs`) whose `bin/zfs`, `bin/zpool` run the unpacked tools with their
//! libraries. [`tool`] picks those over the ones on PATH, and [`detect`] refuses to pair the
//! module with zfs-fuse's CLI, which only talks to the zfs-fuse daemon.
//!
//! The kernel module gets its pool on a loop device over the pool file: a pool on the file
//! itself failed in the VM ("cannot create: no such pool or dataset") where the same file
//! through a loop device works. zfs-fuse keeps the file vdev.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{Flavor, NAME};
use crate::error::{IoContext, Result};
use crate::sys::{hostinfo, loopdev};

/// Names the unpacked OpenZFS userland (a dir with `bin/zfs` and `bin/zpool`).
pub const PREFIX_ENV: &str = "COWBENCH_OPENZFS_PREFIX";

const MODULE: &str = "/sys/module/zfs";

/// The private userland, when the module is loaded and the variable names a usable prefix.
fn prefix() -> Option<&'static Path> {
    static PREFIX: OnceLock<Option<PathBuf>> = OnceLock::new();
    PREFIX
        .get_or_init(|| {
            let p = PathBuf::from(std::env::var_os(PREFIX_ENV).filter(|v| !v.is_empty())?);
            (Path::new(MODULE).exists() && usable(&p)).then_some(p)
        })
        .as_deref()
}

fn usable(prefix: &Path) -> bool {
    ["zfs", "zpool"].iter().all(|t| prefix.join("bin").join(t).is_file())
}

/// The program to run for `name` (`zfs`, `zpool`): the private userland's when there is one,
/// else the name, found on PATH.
pub fn tool(name: &str) -> String {
    match prefix() {
        Some(p) => p.join("bin").join(name).to_string_lossy().into_owned(),
        None => name.to_string(),
    }
}

/// The implementation when the OpenZFS module is loaded and its userland is the private one
/// or missing; `None` leaves the decision to the caller (no module, or a system-wide OpenZFS
/// userland).
pub fn detect() -> Option<std::result::Result<Flavor, String>> {
    if !Path::new(MODULE).exists() {
        return None;
    }
    let version = || {
        fs::read_to_string(format!("{MODULE}/version"))
            .ok()
            .map(|s| s.trim().split('-').next().unwrap_or("").to_string())
            .filter(|s| !s.is_empty())
    };
    let dev_zfs = || {
        if Path::new("/dev/zfs").exists() {
            Ok(Flavor::Kernel(version()))
        } else {
            Err("the zfs kernel module is loaded but /dev/zfs is missing".to_string())
        }
    };
    if prefix().is_some() {
        return Some(dev_zfs());
    }
    if let Some(p) = std::env::var_os(PREFIX_ENV).filter(|v| !v.is_empty()) {
        return Some(Err(format!(
            "{PREFIX_ENV}={} has no bin/zfs and bin/zpool (scripts/vm.d/openzfs makes them)",
            Path::new(&p).display()
        )));
    }
    match hostinfo::which("zfs") {
        Some(cli) if from_zfs_fuse(&cli) => Some(Err(format!(
            "the OpenZFS kernel module is loaded but {} is zfs-fuse's CLI; set {PREFIX_ENV} to an OpenZFS \
             userland (scripts/vm.d/openzfs) or install zfsutils-linux",
            cli.display()
        ))),
        _ => None,
    }
}

/// Whether `cli` is a file of the Debian package zfs-fuse.
fn from_zfs_fuse(cli: &Path) -> bool {
    let Ok(list) = fs::read_to_string("/var/lib/dpkg/info/zfs-fuse.list") else { return false };
    let canon = fs::canonicalize(cli).unwrap_or_else(|_| cli.to_path_buf());
    list.lines().any(|l| {
        let p = Path::new(l);
        p == cli || p == canon || fs::canonicalize(p).map(|c| c == canon).unwrap_or(false)
    })
}

/// The loop device over `image`, attached now unless one is.
fn loop_over(image: &Path) -> Result<PathBuf> {
    let found = loopdev::find_by_file(image).ctx(NAME, None, || format!("look for a loop device over {}", image.display()))?;
    match found.into_iter().next() {
        Some(dev) => Ok(dev),
        // Not autoclear: the pool holds the device only while it is imported, and a
        // re-import after an export must find it still there. Teardown detaches it.
        // Direct IO where the backing filesystem takes it: the ARC is the pool's cache, and a
        // buffered loop device would keep a second copy of every block read in the page cache
        // of the pool file.
        None => loopdev::attach_prefer_direct(image)
            .map(|(d, _)| d)
            .ctx(NAME, None, || format!("attach a loop device to {}", image.display())),
    }
}

/// The vdev to create the pool on `image` with.
pub fn vdev(flavor: &Flavor, image: &Path) -> Result<String> {
    match flavor {
        Flavor::Kernel(_) => Ok(loop_over(image)?.to_string_lossy().into_owned()),
        Flavor::Fuse(_) => Ok(image.to_string_lossy().into_owned()),
    }
}

/// Where `zpool import -d` looks for the pool on `image` (files under `root` for zfs-fuse).
/// OpenZFS labels a whole disk with partitions, so the loop device's partitions are listed too.
pub fn import_dirs(flavor: &Flavor, image: &Path, root: &Path) -> Result<Vec<String>> {
    match flavor {
        Flavor::Kernel(_) => {
            let dev = loop_over(image)?;
            let name = dev.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let mut out = vec![dev.to_string_lossy().into_owned()];
            if let Ok(rd) = fs::read_dir(format!("/sys/block/{name}")) {
                let mut parts: Vec<String> = rd
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&name) && n.len() > name.len())
                    .map(|n| format!("/dev/{n}"))
                    .collect();
                parts.sort();
                out.extend(parts);
            }
            Ok(out)
        }
        Flavor::Fuse(_) => Ok(vec![root.to_string_lossy().into_owned()]),
    }
}

/// Detach the loop devices over `image` (none for zfs-fuse); after the pool is gone. Each
/// only while it still has `image` behind it: the number of a device found by file can be
/// reused by another process before the detach.
pub fn release_vdev(image: &Path) -> Result<()> {
    if !image.exists() {
        return Ok(());
    }
    match loopdev::detach_all_of(image) {
        Ok(_) => Ok(()),
        // No /sys/block to look in: nothing was attached.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx(NAME, None, || format!("detach the loop devices over {}", image.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `COWBENCH_EXPECT_ZFS_IMPL=kernel` (set where OpenZFS must be the implementation, as in
    /// scripts/vm-tests): the probe must report the kernel module, with the private userland
    /// when one is named. `fuse`: zfs-fuse. Unset: nothing is expected, and nothing probed
    /// (the probe starts the zfs-fuse daemon).
    #[test]
    fn probe_reports_the_expected_implementation() {
        let expect = std::env::var("COWBENCH_EXPECT_ZFS_IMPL").unwrap_or_default();
        if expect.is_empty() {
            eprintln!("COWBENCH_EXPECT_ZFS_IMPL unset: no implementation expected, skipped");
            return;
        }
        let report = super::super::probe();
        eprintln!("zfs probe: {report:?}");
        if report.stand_in {
            // The probe started the daemon if none ran: stop it again unless pools use it.
            let _l = super::super::daemon::lock().unwrap();
            super::super::daemon::stop_if_ours_and_idle().unwrap();
        }
        match expect.as_str() {
            "kernel" => {
                assert!(report.available, "zfs unavailable: {:?}", report.reason);
                let imp = report.implementation.clone().unwrap_or_default();
                assert!(imp.starts_with("kernel (OpenZFS "), "implementation {imp}");
                assert!(!report.stand_in);
                // zfs-fuse's zpool knows numbered pool versions only (up to 23).
                let out = crate::sys::cmd::run(NAME, &tool("zpool"), &["upgrade", "-v"], std::time::Duration::from_secs(60))
                    .expect("zpool upgrade -v");
                assert!(out.stdout.contains("feature flags"), "not OpenZFS's zpool: {}", out.stdout);
                if std::env::var_os(PREFIX_ENV).is_some() {
                    let p = prefix().expect("the named prefix is used");
                    assert!(tool("zpool").starts_with(&*p.to_string_lossy()));
                }
            }
            "fuse" => {
                assert!(report.available, "zfs unavailable: {:?}", report.reason);
                assert_eq!(report.implementation.as_deref(), Some("zfs-fuse"));
                assert!(report.stand_in);
            }
            other => panic!("COWBENCH_EXPECT_ZFS_IMPL={other}: expected kernel or fuse"),
        }
    }

    #[test]
    fn without_the_module_the_tools_come_from_path() {
        if Path::new(MODULE).exists() {
            eprintln!("the zfs module is loaded here: skipped");
            return;
        }
        assert!(prefix().is_none());
        assert_eq!(tool("zpool"), "zpool");
        assert!(detect().is_none());
    }

    #[test]
    fn a_prefix_needs_both_tools() {
        let dir = std::env::temp_dir().join(format!("cowbench-openzfs-prefix-{}", std::process::id()));
        fs::create_dir_all(dir.join("bin")).unwrap();
        assert!(!usable(&dir));
        fs::write(dir.join("bin/zfs"), "").unwrap();
        assert!(!usable(&dir));
        fs::write(dir.join("bin/zpool"), "").unwrap();
        assert!(usable(&dir));
        fs::remove_dir_all(&dir).unwrap();
    }
}
