//! A driver on a root of its own, torn down on drop — also when the test panics.

use std::path::{Path, PathBuf};

use crate::driver::{Driver, DriverConfig};
use crate::registry;
use crate::sys::{hostinfo, mounts};

/// Environment variable listing drivers that must be available (comma-separated). A required
/// driver that is unavailable fails its tests instead of skipping them: CI sets it for every
/// backend this machine kind is known to run, so a broken probe can never pass silently.
pub const REQUIRE_ENV: &str = "COWBENCH_REQUIRE_DRIVERS";

/// Environment variable naming the directory under which test roots are made
/// (default `/var/tmp`; it must not be tmpfs-backed for btrfs/zfs loop files to be cheap).
pub const TEST_ROOT_ENV: &str = "COWBENCH_TEST_ROOT";

pub struct Fixture {
    driver: Option<Box<dyn Driver>>,
    root: PathBuf,
    cfg: DriverConfig,
    tmp: Option<tempfile::TempDir>,
}

fn required(name: &str) -> bool {
    std::env::var(REQUIRE_ENV)
        .map(|v| v.split(',').any(|d| d.trim() == name || d.trim() == "all"))
        .unwrap_or(false)
}

/// Open driver `name` on a fresh root, or return None (after printing why) when it cannot run
/// here. Panics when the driver is listed in `COWBENCH_REQUIRE_DRIVERS` but cannot run.
pub fn fixture(name: &str, options: &[(&str, &str)]) -> Option<Fixture> {
    let skip = |reason: String| -> Option<Fixture> {
        if required(name) {
            panic!("{name} is required ({REQUIRE_ENV}) but cannot run here: {reason}");
        }
        eprintln!("SKIPPED {name}: {reason}");
        None
    };
    if !hostinfo::is_root() {
        return skip("the conformance suite needs root (mounts, loop devices)".into());
    }
    let report = registry::probe(name).expect("known driver");
    if !report.available {
        return skip(report.reason.unwrap_or_default());
    }
    let base = std::env::var_os(TEST_ROOT_ENV).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/tmp"));
    std::fs::create_dir_all(&base).expect("test root base");
    let tmp = tempfile::Builder::new().prefix(&format!("cowbench-test-{name}-")).tempdir_in(&base).expect("tempdir");
    let root = tmp.path().to_path_buf();
    let mut cfg = DriverConfig::new(root.join("root"));
    for (k, v) in options {
        cfg = cfg.with_option(*k, *v);
    }
    let driver = registry::open(name, &cfg).unwrap_or_else(|e| panic!("open {name}: {e}"));
    Some(Fixture { driver: Some(driver), root, cfg, tmp: Some(tmp) })
}

impl Fixture {
    pub fn driver(&self) -> &dyn Driver {
        self.driver.as_deref().expect("driver open")
    }

    /// The test's own directory (the driver root is `root()/root`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The configuration the driver was opened with (to open a second handle on the same root).
    pub fn config(&self) -> &DriverConfig {
        &self.cfg
    }

    /// A fresh empty directory under the test's root, e.g. a mount target.
    pub fn dir(&self, name: &str) -> PathBuf {
        let p = self.root.join("scratch").join(name);
        std::fs::create_dir_all(&p).expect("scratch dir");
        p
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Mount targets first (the test may have panicked with layers mounted), then the
        // backend's own store, then the files. Errors are printed, never panicked on: a panic
        // in drop during unwinding would abort and leak everything.
        let _ = mounts::unmount_all_under(&self.root.join("scratch"));
        if let Some(d) = self.driver.take() {
            if let Err(e) = d.teardown() {
                eprintln!("teardown of {}: {e}", d.name());
            }
        }
        if let Err(e) = mounts::unmount_all_under(&self.root) {
            eprintln!("unmount under {}: {e}", self.root.display());
        }
        if let Some(t) = self.tmp.take() {
            // Immutable-flagged or busy files would make this fail; say so rather than hide it.
            if let Err(e) = t.close() {
                eprintln!("remove {}: {e}", self.root.display());
            }
        }
    }
}
