//! Loop devices attached and detached from many threads at once, with lookups by file running
//! alongside: every attach must get a device of its own over its own file, and a lookup must
//! never fail because some other device came or went while it looked.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use cowbench_drivers::sys::{hostinfo, loopdev};

const THREADS: usize = 16;
const CYCLES: usize = 50;
/// Turns a hang (a lost wakeup, a device that never goes) into a failure.
const LIMIT: Duration = Duration::from_secs(600);

/// Detaches its device when dropped, also when a check fails.
struct Attached(PathBuf);

impl Drop for Attached {
    fn drop(&mut self) {
        if let Err(e) = loopdev::detach(&self.0) {
            eprintln!("detach {}: {e}", self.0.display());
        }
    }
}

/// Wait (bounded) until no device is over `file` any more.
fn gone(file: &Path) -> Result<(), String> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let left = loopdev::find_by_file(file).map_err(|e| format!("find {}: {e}", file.display()))?;
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > end {
            return Err(format!("{} still attached to {left:?}", file.display()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn cycles(file: &Path) -> Result<(), String> {
    let want = std::fs::canonicalize(file).map_err(|e| e.to_string())?;
    for c in 0..CYCLES {
        let dev = loopdev::attach(file, loopdev::AttachOptions::default())
            .map_err(|e| format!("cycle {c}: attach {}: {e}", file.display()))?;
        let guard = Attached(dev.clone());
        match loopdev::backing_file(&dev) {
            Ok(Some(b)) if b == want => {}
            other => return Err(format!("cycle {c}: {} is over {other:?}, not {}", dev.display(), want.display())),
        }
        let found = loopdev::find_by_file(file).map_err(|e| format!("cycle {c}: find: {e}"))?;
        if found != [dev.clone()] {
            return Err(format!("cycle {c}: find {} gave {found:?}, attached {}", file.display(), dev.display()));
        }
        drop(guard);
        gone(file).map_err(|e| format!("cycle {c}: after detach: {e}"))?;
    }
    Ok(())
}

#[test]
fn parallel_attach_detach_each_thread_gets_its_own_device() {
    if !hostinfo::is_root() || !Path::new("/dev/loop-control").exists() {
        eprintln!("SKIPPED: needs root and /dev/loop-control");
        return;
    }
    let base = std::env::var_os("COWBENCH_TEST_ROOT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let dir = tempfile::Builder::new().prefix("cowbench-test-loopdev-").tempdir_in(&base).unwrap();
    let files: Vec<PathBuf> = (0..THREADS)
        .map(|i| {
            let f = dir.path().join(format!("img{i}"));
            loopdev::create_sparse(&f, 1 << 20).unwrap();
            f
        })
        .collect();

    // Lookups of every file (and of one never attached) while the devices churn.
    let stop = Arc::new(AtomicBool::new(false));
    let lookups = Arc::new(AtomicUsize::new(0));
    let finder = {
        let (stop, lookups) = (stop.clone(), lookups.clone());
        let mut probe = files.clone();
        probe.push(dir.path().join("never-attached"));
        std::thread::spawn(move || -> Result<(), String> {
            while !stop.load(Ordering::Relaxed) {
                for f in &probe {
                    // Only "never fails" holds here: a scan is no snapshot, so while a file
                    // moves from one device to the next it can list both (the old device read
                    // before its detach, the new one after the attach).
                    loopdev::find_by_file(f).map_err(|e| format!("find {} during churn: {e}", f.display()))?;
                    lookups.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        })
    };

    let (tx, rx) = mpsc::channel();
    for f in files.clone() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let r = cycles(&f);
            let _ = tx.send((f, r));
        });
    }
    drop(tx);
    let deadline = Instant::now() + LIMIT;
    let mut failures = Vec::new();
    for _ in 0..THREADS {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((_, Ok(()))) => {}
            Ok((f, Err(e))) => failures.push(format!("{}: {e}", f.display())),
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                panic!("attach/detach threads did not finish within {LIMIT:?}");
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let finder = finder.join().expect("finder thread");
    eprintln!("{THREADS} threads x {CYCLES} attach/detach cycles; {} lookups alongside", lookups.load(Ordering::Relaxed));
    assert!(failures.is_empty(), "{failures:#?}");
    finder.unwrap();
    for f in &files {
        gone(f).unwrap();
    }
}
