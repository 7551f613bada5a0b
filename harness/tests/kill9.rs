//! `kill -9` of `cowbench run` at a random moment, then `cowbench clean --root`: nothing that
//! belongs to that root may be left — no mount under it or from it, no loop device backed by a
//! file under it, no process naming it (FUSE daemons, runc, container inits), no cgroup of it,
//! no zfs-fuse daemon its run started, no state file — and a second run on the same root works.
//!
//! Five cases pair each host driver with a workload, rotated by the seed so that every
//! workload kind is covered in every run of the suite. The seed (and each kill moment) is
//! printed; `COWBENCH_KILL9_SEED=N` repeats a run. Skips a case with a printed reason when its
//! driver or runc is unavailable, but fails when COWBENCH_REQUIRE_DRIVERS lists the driver.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cowbench_drivers::ledger::{Ledger, ResourceKind};
use cowbench_drivers::zfs::daemon as zfs_daemon;
use rand::{Rng, SeedableRng};

mod leaks;
use leaks::{loops_under, mounts_of, our_cgroups, processes_mentioning, skip_reason};

const DRIVERS: [&str; 5] = ["overlay", "vfs", "btrfs", "zfs", "aufs"];
const WORKLOADS: [&str; 5] = ["density", "copyup", "sharedcache", "churn", "layers"];
/// The kill lands this long after the start, at most: past the probe and image build, inside
/// the first cells of a quick run.
const KILL_MS: std::ops::RangeInclusive<u64> = 2_000..=12_000;
/// Bound on each command, so that a hang fails the test instead of stalling the suite.
const LIMIT: Duration = Duration::from_secs(900);

fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        let s = std::env::var("COWBENCH_KILL9_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64
        });
        eprintln!("kill9: seed {s} (COWBENCH_KILL9_SEED={s} repeats these cases)");
        s
    })
}

/// A scratch dir under /var/tmp holding the root (`root/`), the results and the commands'
/// output. On drop (also on panic) the run is killed and the root cleaned.
struct Scratch {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Scratch {
    fn root(&self) -> PathBuf {
        std::fs::canonicalize(self.dir.path()).unwrap().join("root")
    }
    fn cowbench(&self, log: &str, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cowbench"));
        c.args(args).arg("--root").arg(self.root());
        // Files, not pipes: a daemon that kept a pipe open would hang the reader.
        c.stdin(Stdio::null())
            .stdout(File::create(self.dir.path().join(format!("{log}.out"))).unwrap())
            .stderr(File::create(self.dir.path().join(format!("{log}.err"))).unwrap());
        c
    }
    fn output(&self, log: &str) -> (String, String) {
        let read = |ext: &str| std::fs::read_to_string(self.dir.path().join(format!("{log}.{ext}"))).unwrap_or_default();
        (read("out"), read("err"))
    }
    /// Run a cowbench command to its end (bounded by [`LIMIT`]).
    fn run(&self, log: &str, args: &[&str]) -> (ExitStatus, String, String) {
        let mut child = self.cowbench(log, args).spawn().unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if start.elapsed() > LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("cowbench {args:?} did not finish in {LIMIT:?}: {}", self.output(log).1);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let (out, err) = self.output(log);
        (status, out, err)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        let cleaned = Command::new(env!("CARGO_BIN_EXE_cowbench")).arg("clean").arg("--root").arg(self.root()).status();
        if !cleaned.is_ok_and(|s| s.success()) {
            // The ledger names what is left: keep it for a later `cowbench clean --root`.
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            eprintln!("kill9: clean failed; kept {} for `cowbench clean --root`", dir.keep().display());
        }
    }
}

/// zfs-fuse daemons the root's ledger says its run started (pid known once it answered).
fn recorded_zfs_daemons(root: &Path) -> Vec<i32> {
    Ledger::open(root)
        .entries()
        .unwrap_or_default()
        .iter()
        .filter(|e| e.kind == ResourceKind::Fuse && e.id == zfs_daemon::PIDFILE)
        .filter_map(|e| zfs_daemon::recorded_pid(&e.detail))
        .collect()
}

fn is_zfs_fuse(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "zfs-fuse")
}

/// `cowbench clean --json` succeeds with no errors and leaves nothing of the root behind.
/// `zfs_pids`: daemons the root's ledger recorded before the clean.
fn clean_and_check(s: &Scratch, log: &str, zfs_pids: &[i32]) -> serde_json::Value {
    let root = s.root();
    let (status, out, err) = s.run(log, &["clean", "--json"]);
    assert!(status.success(), "cowbench clean failed ({status}):\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("clean --json: {e}: {out}"));
    assert_eq!(report["errors"].as_array().map(Vec::len), Some(0), "clean reported errors: {report}");

    let m = mounts_of(&root);
    assert!(m.is_empty(), "mounts left: {m:?}");
    let l = loops_under(&root);
    assert!(l.is_empty(), "loop devices left: {l:?}");
    let p = processes_mentioning(&root);
    assert!(p.is_empty(), "processes naming the root left: {p:?}");
    let cg = our_cgroups(&root);
    assert!(cg.is_empty(), "cgroups left: {cg:?}");
    // zfs-fuse is host-wide: attributed by the pid in the root's ledger. It may only stay
    // when the clean says which live run of another root it serves.
    let warnings = report["warnings"].to_string();
    for pid in zfs_pids {
        assert!(
            !is_zfs_fuse(*pid) || warnings.contains(&format!("pid {pid})")),
            "zfs-fuse pid {pid} started for this root is still running: {report}"
        );
    }
    let left: Vec<String> = match std::fs::read_dir(&root) {
        Ok(rd) => rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    assert!(left.is_empty(), "state left under {}: {left:?}", root.display());
    report
}

fn kill9_case(i: usize) {
    let seed = seed();
    let driver = DRIVERS[i];
    let workload = WORKLOADS[(i + (seed % 5) as usize) % 5];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ (i as u64 + 1));
    if let Some(why) = skip_reason(driver) {
        eprintln!("SKIPPED kill9 {driver}/{workload}: {why}");
        return;
    }
    let dir = tempfile::Builder::new().prefix(&format!("cowbench-test-kill9-{driver}-")).tempdir_in("/var/tmp").unwrap();
    let mut s = Scratch { dir, child: None };
    let results = s.dir.path().join("results");
    let results = results.to_str().unwrap();
    // The workload's own quick repetitions: long enough for the kill to land inside a cell.
    let run = ["run", "--drivers", driver, "--workloads", workload, "--profile", "quick", "--out", results];

    // A run that ends before its kill moment is cleaned and checked too; the next attempt
    // kills at a random moment within the time the last one took, until one is killed.
    let mut window = KILL_MS;
    for attempt in 1.. {
        assert!(attempt <= 4, "{driver}/{workload}: no attempt was killed before it ended by itself");
        let kill_after = Duration::from_millis(rng.gen_range(window.clone()));
        eprintln!("kill9: {driver}/{workload} attempt {attempt}, SIGKILL after {} ms (seed {seed})", kill_after.as_millis());
        let log = format!("run-{attempt}");
        s.child = Some(s.cowbench(&log, &run).spawn().unwrap());
        let start = Instant::now();
        let mut child = s.child.take().unwrap();
        let finished = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if start.elapsed() >= kill_after {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if finished.is_none() {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
            child.wait().unwrap();
        }
        let zfs_pids = recorded_zfs_daemons(&s.root());
        let (_, err) = s.output(&log);
        match finished {
            Some(st) => {
                eprintln!("kill9: ended by itself ({st}) after {} ms; cleaning after a finished run", start.elapsed().as_millis());
                if !st.success() {
                    let failed: Vec<&str> = err.lines().filter(|l| l.starts_with("FAILED") || l.contains("error")).collect();
                    eprintln!("kill9: {driver}/{workload} attempt {attempt} failed by itself: {failed:?}");
                }
            }
            None => eprintln!("kill9: killed; last output: {}; zfs-fuse in the ledger: {zfs_pids:?}", err.lines().last().unwrap_or("")),
        }
        clean_and_check(&s, "clean1", &zfs_pids);
        if finished.is_none() {
            break;
        }
        let took = start.elapsed().as_millis() as u64;
        window = (took / 4).max(200)..=(took * 9 / 10).max(400);
    }

    // Idempotent: a second clean finds nothing.
    let again = clean_and_check(&s, "clean2", &[]);
    assert_eq!(again["removed"].as_array().map(Vec::len), Some(0), "second clean removed something: {again}");

    // The root is usable again: a short run ends well and leaves only its results.
    let short = ["run", "--drivers", driver, "--workloads", "layers", "--profile", "quick", "--repeat", "1", "--out", results];
    let (status, _, err) = s.run("run2", &short);
    assert!(status.success(), "second run on the root failed ({status}):\n{err}");
    let zfs_pids = recorded_zfs_daemons(&s.root());
    clean_and_check(&s, "clean3", &zfs_pids);
    assert!(std::fs::read_dir(s.dir.path().join("results")).unwrap().count() >= 1, "results of the runs are kept");
}

#[test]
fn kill9_overlay() {
    kill9_case(0);
}

#[test]
fn kill9_vfs() {
    kill9_case(1);
}

#[test]
fn kill9_btrfs() {
    kill9_case(2);
}

#[test]
fn kill9_zfs() {
    kill9_case(3);
}

#[test]
fn kill9_aufs() {
    kill9_case(4);
}
