//! `kill -9` of a run in the middle of a density cell, then `cowbench clean --root`: no mount,
//! loop device, runc container, cgroup or FUSE daemon of cowbench may remain under that root.
//!
//! One test per driver (overlay and vfs always; btrfs adds a loop device, aufs a FUSE daemon).
//! Skips with a printed reason when the driver or runc is unavailable, but fails when
//! COWBENCH_REQUIRE_DRIVERS lists the driver.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cowbench_drivers::registry;
use cowbench_drivers::sys::{hostinfo, loopdev, mounts};

mod leaks;
use leaks::{cgroup_hierarchies, loops_under, our_cgroups, processes_mentioning, runc_list, skip_reason};

/// Kills the run (if still alive) and cleans the root on drop, also when the test panics.
struct Guard {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Guard {
    fn root(&self) -> PathBuf {
        std::fs::canonicalize(self.dir.path()).unwrap().join("root")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new(env!("CARGO_BIN_EXE_cowbench")).arg("clean").arg("--root").arg(self.root()).output();
    }
}

fn kill_mid_density_then_clean(driver: &str) {
    if let Some(why) = skip_reason(driver) {
        eprintln!("SKIPPED clean after kill -9 on {driver}: {why}");
        return;
    }
    let dir = tempfile::Builder::new().prefix(&format!("cowbench-test-clean-{driver}-")).tempdir_in("/var/tmp").unwrap();
    let mut g = Guard { dir, child: None };
    let root = g.root();
    let child = Command::new(env!("CARGO_BIN_EXE_cowbench"))
        .args(["run", "--drivers", driver, "--workloads", "density", "--profile", "quick", "--repeat", "5", "--root"])
        .arg(&root)
        .arg("--out")
        .arg(g.dir.path().join("results"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    g.child = Some(child);

    // Wait until the run holds several containers at once (the N = 4 or N = 16 cell).
    let t0 = Instant::now();
    let held = loop {
        let ids = runc_list(&root);
        if ids.len() >= 3 {
            break ids;
        }
        if let Some(status) = g.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("the run ended ({status}) before containers were up");
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "no density containers after 300 s");
        std::thread::sleep(Duration::from_millis(20));
    };

    // While the run is alive, clean refuses to touch its root.
    let refused = Command::new(env!("CARGO_BIN_EXE_cowbench")).args(["clean", "--root"]).arg(&root).output().unwrap();
    assert_eq!(refused.status.code(), Some(1), "clean during a run: {}", String::from_utf8_lossy(&refused.stderr));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is using"));

    // kill -9: no handler runs, nothing is cleaned by the run itself.
    let mut child = g.child.take().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait().unwrap();

    // There is something to clean, or the test proves nothing.
    assert!(!runc_list(&root).is_empty(), "containers {held:?} vanished by themselves");
    assert!(!mounts::mounts_under(&root).unwrap().is_empty(), "no mounts under the root after kill -9");
    assert!(!our_cgroups(&root).is_empty(), "no cgroup of this root after kill -9");
    if driver == "btrfs" {
        assert!(!loops_under(&root).is_empty(), "btrfs is loop-backed: a loop device must be attached");
    }
    if driver == "aufs" && registry::probe("aufs").unwrap().stand_in {
        assert!(!processes_mentioning(&root).is_empty(), "unionfs-fuse daemons must be running");
    }

    let out = Command::new(env!("CARGO_BIN_EXE_cowbench")).args(["clean", "--json", "--root"]).arg(&root).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cowbench clean failed ({}): {stderr}", out.status);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints one document");
    let removed = report["removed"].as_array().unwrap();
    assert!(removed.iter().any(|r| r["kind"] == "container"), "no container reported removed: {report}");
    assert!(stderr.contains("removed"), "removals are printed on stderr");

    let m = mounts::mounts_under(&root).unwrap();
    assert!(m.is_empty(), "mounts left: {m:?}");
    let l = loops_under(&root);
    assert!(l.is_empty(), "loop devices left: {l:?}");
    let c = runc_list(&root);
    assert!(c.is_empty(), "runc containers left: {c:?}");
    let cg = our_cgroups(&root);
    assert!(cg.is_empty(), "cgroups left: {cg:?}");
    let p = processes_mentioning(&root);
    assert!(p.is_empty(), "processes (FUSE daemons, container inits) left: {p:?}");

    // Idempotent: a second clean finds nothing.
    let again = Command::new(env!("CARGO_BIN_EXE_cowbench")).args(["clean", "--json", "--root"]).arg(&root).output().unwrap();
    assert!(again.status.success());
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["removed"].as_array().unwrap().len(), 0, "second clean removed something: {again}");
}

#[test]
fn clean_after_kill_overlay() {
    kill_mid_density_then_clean("overlay");
}

#[test]
fn clean_after_kill_vfs() {
    kill_mid_density_then_clean("vfs");
}

#[test]
fn clean_after_kill_btrfs() {
    kill_mid_density_then_clean("btrfs");
}

#[test]
fn clean_after_kill_aufs() {
    kill_mid_density_then_clean("aufs");
}

/// The ledger is the second safety net: a mount, a loop device and a cgroup (with a process in
/// it) recorded there are removed by `cowbench clean`; the same kinds of resources not recorded
/// and outside the root are left alone.
#[test]
fn clean_removes_ledger_entries_and_nothing_else() {
    use cowbench_drivers::ledger::{Ledger, ResourceKind};
    if !hostinfo::is_root() || !Path::new("/dev/loop-control").exists() {
        eprintln!("SKIPPED clean_removes_ledger_entries_and_nothing_else: needs root and loop devices");
        return;
    }
    let dir = tempfile::Builder::new().prefix("cowbench-test-ledger-").tempdir_in("/var/tmp").unwrap();
    let g = Guard { dir, child: None };
    let root = g.root();
    std::fs::create_dir_all(&root).unwrap();
    let ledger = Ledger::open(&root);

    // Outside the root and not in the ledger: must survive.
    let outside = g.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    mounts::mount("tmpfs", &outside, "tmpfs", nix::mount::MsFlags::empty(), Some("size=1m")).unwrap();
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = mounts::unmount(&self.0);
        }
    }
    let _outside_guard = Unmount(outside.clone());

    // Recorded, then created.
    let m = root.join("scratch");
    std::fs::create_dir_all(&m).unwrap();
    ledger.record(ResourceKind::Mount, m.to_str().unwrap(), "").unwrap();
    mounts::mount("tmpfs", &m, "tmpfs", nix::mount::MsFlags::empty(), Some("size=1m")).unwrap();

    let img = root.join("disk.img");
    loopdev::create_sparse(&img, 8 << 20).unwrap();
    ledger.record(ResourceKind::Loop, img.to_str().unwrap(), "").unwrap();
    let dev = loopdev::attach(&img, loopdev::AttachOptions::default()).unwrap();

    let cg = format!("cowbench-ledger-test-{}", std::process::id());
    ledger.record(ResourceKind::Cgroup, &format!("{cg}/inner"), "").unwrap();
    let mut sleeper = Command::new("sleep").arg("600").spawn().unwrap();
    let mut made = Vec::new();
    for h in cgroup_hierarchies() {
        let d = h.join(&cg).join("inner");
        if std::fs::create_dir_all(&d).is_ok() {
            made.push(h.join(&cg));
            if made.len() == 1 {
                std::fs::write(d.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
            }
        }
    }
    assert!(!made.is_empty(), "no cgroup hierarchy accepted a test cgroup");

    let out = Command::new(env!("CARGO_BIN_EXE_cowbench")).args(["clean", "--json", "--root"]).arg(&root).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let sleeper_status = sleeper.try_wait().unwrap().or_else(|| {
        std::thread::sleep(Duration::from_millis(200));
        sleeper.try_wait().unwrap()
    });
    // Parents of the recorded cgroup are not in the ledger: remove them here.
    for p in &made {
        let _ = std::fs::remove_dir(p.join("inner"));
        let _ = std::fs::remove_dir(p);
    }
    if sleeper_status.is_none() {
        let _ = sleeper.kill();
        let _ = sleeper.wait();
    }
    assert!(out.status.success(), "clean failed: {stderr}");

    assert!(!mounts::is_mountpoint(&m), "recorded mount left");
    assert!(!matches!(loopdev::backing_file(&dev).unwrap(), Some(b) if b.starts_with(&root)), "recorded loop device left");
    assert!(sleeper_status.is_some(), "the process in the recorded cgroup was not killed");
    assert!(mounts::is_mountpoint(&outside), "a mount outside the root and the ledger was removed");
    assert!(Ledger::open(&root).entries().unwrap().is_empty(), "ledger not cleared after a clean without errors");
}

/// A removal that fails is reported, never hidden: `cowbench clean` exits 1 with the failure
/// in `errors` (an immutable file stands in for a tree that cannot be removed); once it can
/// be removed, the next clean removes it and exits 0.
#[test]
fn clean_reports_what_it_could_not_remove() {
    if !hostinfo::is_root() || hostinfo::which("chattr").is_none() {
        eprintln!("SKIPPED clean_reports_what_it_could_not_remove: needs root and chattr");
        return;
    }
    let dir = tempfile::Builder::new().prefix("cowbench-test-clean-errors-").tempdir_in("/var/tmp").unwrap();
    let g = Guard { dir, child: None };
    let root = g.root();
    let stuck: Vec<PathBuf> = ["vfs/l/1/etc/stuck", "containers/c1/stuck"].iter().map(|p| root.join(p)).collect();
    let chattr = |flag: &str, p: &Path| assert!(Command::new("chattr").arg(flag).arg(p).status().unwrap().success(), "chattr {flag} {}", p.display());
    for p in &stuck {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
        chattr("+i", p);
    }
    struct Mutable(Vec<PathBuf>);
    impl Drop for Mutable {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = Command::new("chattr").arg("-i").arg(p).status();
            }
        }
    }
    let mutable = Mutable(stuck.clone());

    let out = Command::new(env!("CARGO_BIN_EXE_cowbench")).args(["clean", "--json", "--root"]).arg(&root).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "clean that left files behind: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors = report["errors"].to_string();
    for d in ["vfs", "containers"] {
        assert!(errors.contains(&root.join(d).display().to_string()), "no error names {d}: {report}");
    }
    assert!(stuck.iter().all(|p| p.exists()));

    drop(mutable);
    let out = Command::new(env!("CARGO_BIN_EXE_cowbench")).args(["clean", "--json", "--root"]).arg(&root).output().unwrap();
    assert!(out.status.success(), "clean once removable: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"].as_array().map(Vec::len), Some(0), "{report}");
    assert!(std::fs::read_dir(&root).unwrap().next().is_none(), "left under the root: {:?}", std::fs::read_dir(&root).unwrap().collect::<Vec<_>>());
}
