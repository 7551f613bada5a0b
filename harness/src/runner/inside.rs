//! Helpers of the sharedcache, churn, fragmentation and concurrent executors: running a probe
//! request inside a running container (`<runtime> exec`, so the container's init keeps its
//! layer and cgroup between requests), host memory and backend space snapshots.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Context;
use cowbench_drivers::Driver;
use cowbench_workloads::probe::{Request, Response, PROBE_PATH};

use crate::container::Container;
use crate::image::{self, Image, ImageSpec};

use super::exec::Session;

/// Synthetic images this process built, per driver root: (driver root, spec as JSON).
static BUILT: std::sync::Mutex<Vec<(std::path::PathBuf, String)>> = std::sync::Mutex::new(Vec::new());

/// `image::build`, but an image this process already built with the same spec in the same
/// driver is loaded instead: `build` re-generates and hashes every layer to check that it is
/// current, which for a large file costs as much as building it. (An image built by another
/// process, e.g. with an older probe binary, is still checked by `build`.)
pub fn build_image(driver: &dyn Driver, driver_root: &Path, spec: &ImageSpec) -> anyhow::Result<Image> {
    let key = (driver_root.to_path_buf(), serde_json::to_string(spec).unwrap_or_default());
    let known = BUILT.lock().map(|b| b.contains(&key)).unwrap_or(false);
    if known {
        if let Ok(img) = Image::load(driver, &image::sanitize_name(&spec.name)) {
            return Ok(img);
        }
    }
    let img = image::build(driver, spec)?;
    if let Ok(mut b) = BUILT.lock() {
        b.push(key);
    }
    Ok(img)
}

/// [`build_image`] in the session's driver.
pub fn session_image(s: &Session, spec: &ImageSpec) -> anyhow::Result<Image> {
    build_image(&*s.driver, &s.cfg.driver_root(&s.name), spec)
}

/// Run `req` with the probe inside `c` (a second process in its namespaces and cgroup) and
/// return the probe's response; any failed operation is an error naming the container.
pub fn exec_probe(c: &Container<'_>, req: &Request) -> anyhow::Result<Response> {
    let resp = exec_probe_unchecked(c, req)?;
    check(&resp).with_context(|| format!("container {}", c.id()))?;
    Ok(resp)
}

/// As [`exec_probe`], but failed operations are left in the response for the caller.
pub fn exec_probe_unchecked(c: &Container<'_>, req: &Request) -> anyhow::Result<Response> {
    let json = req.to_json();
    let out = c.exec(&[PROBE_PATH, json.as_str()])?;
    if out.exit_code != Some(0) {
        anyhow::bail!(
            "container {}: probe exec exited {:?}: {}",
            c.id(),
            out.exit_code,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Response::from_json(&out.stdout_str()).map_err(|e| anyhow::anyhow!("container {}: {e}", c.id()))
}

/// Error for the first failed operation of a response.
pub fn check(resp: &Response) -> anyhow::Result<()> {
    if let Some((s, e)) = resp.first_error() {
        anyhow::bail!("probe {} {} {}: {} (errno {:?})", s.op, s.phase, s.path.as_deref().unwrap_or(""), e.message, e.errno);
    }
    Ok(())
}

/// The `total` sample of operation `op` (first one): (ns, bytes).
pub fn total_of(resp: &Response, op: &str) -> anyhow::Result<(u64, u64)> {
    resp.samples_of(op, "total")
        .next()
        .map(|s| (s.latency_ns, s.bytes))
        .ok_or_else(|| anyhow::anyhow!("probe response has no {op}/total sample"))
}

/// `/proc/meminfo` Cached + Buffers, bytes: the host's page cache.
pub fn page_cache_bytes() -> u64 {
    let m = crate::results::schema::meminfo();
    m.get("Cached_bytes").copied().unwrap_or(0) + m.get("Buffers_bytes").copied().unwrap_or(0)
}

/// `/proc/vmstat` `drop_pagecache`: how often anyone on the host has dropped the page cache.
/// A change across a measurement means another process dropped it meanwhile.
pub fn drop_pagecache_count() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/vmstat").ok()?;
    text.lines().find_map(|l| l.strip_prefix("drop_pagecache ")).and_then(|v| v.trim().parse().ok())
}

/// Blocks allocated under `dir` (bytes), without crossing into other filesystems and counting
/// hard-linked files once: the disk a directory-based backend holds.
pub fn du_bytes(dir: &Path) -> u64 {
    let Ok(top) = std::fs::symlink_metadata(dir) else { return 0 };
    let dev = top.dev();
    let mut seen = HashSet::new();
    let mut total = top.blocks() * 512;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(md) = e.path().symlink_metadata() else { continue };
            if md.dev() != dev {
                continue;
            }
            if md.nlink() > 1 && !md.is_dir() && !seen.insert(md.ino()) {
                continue;
            }
            total += md.blocks() * 512;
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// Used bytes of the filesystem holding `p` (statvfs: (blocks - free) × fragment size).
pub fn statvfs_used(p: &Path) -> Option<u64> {
    let v = nix::sys::statvfs::statvfs(p).ok()?;
    Some((v.blocks() as u64).saturating_sub(v.blocks_free() as u64) * v.fragment_size() as u64)
}

/// `syncfs(2)` of the filesystem holding `p`; best effort (a FUSE filesystem may ignore it).
fn syncfs(p: &Path) {
    if let Ok(f) = std::fs::File::open(p) {
        use std::os::fd::AsRawFd;
        // SAFETY: the fd is open for the duration of the call.
        unsafe { libc::syncfs(f.as_raw_fd()) };
    }
}

/// Space of a backend, read after syncing its filesystems.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Space {
    /// What the backend reports used (pool / filesystem / driver root).
    pub used: u64,
    pub used_source: String,
    /// Blocks its backing store holds on the host.
    pub allocated: u64,
    pub allocated_source: String,
}

/// Backend space: what the backend's own store reports used (thin-pool data, zpool root
/// dataset, the btrfs filesystem), else the blocks under the driver root; allocation of the
/// backing file where there is one, else the driver root's blocks again.
pub fn space(driver: &dyn Driver, driver_root: &Path) -> anyhow::Result<Space> {
    // syncfs(2) of the backend's own filesystems only: a host-wide sync(2) would wait for
    // every other writer on the host.
    syncfs(driver_root);
    let mut st = driver.status()?;
    // The backend's own filesystem (btrfs): synced, then its figures read again.
    if let Some(m) = st.backing.as_ref().and_then(|b| b.mount_point.clone()) {
        syncfs(&m);
        st = driver.status()?;
    }
    let (used, used_source) = match st.space {
        Some(s) => (s.used_bytes, s.source.to_string()),
        None => (du_bytes(driver_root), "blocks under the driver root".to_string()),
    };
    let (allocated, allocated_source) = match st.backing.as_ref().and_then(|b| Some((b.file_allocated_bytes?, b))) {
        Some((v, b)) => (v, format!("blocks allocated to {} ({})", b.path.display(), b.kind)),
        None => (du_bytes(driver_root), "blocks under the driver root".into()),
    };
    Ok(Space { used, used_source, allocated, allocated_source })
}

/// Backend space once deferred frees have landed: a backend that frees space in the
/// background (btrfs deletes subvolumes in a cleaner thread) is synced first
/// (`Driver::sync`); then the backend's used space is read every 500 ms until two readings
/// agree, for `max` at most. Returns the last reading and how it settled. (The host-side
/// allocation of a loop file may go on changing: it is not waited for.)
pub fn settled_space(driver: &dyn Driver, driver_root: &Path, max: std::time::Duration) -> anyhow::Result<(Space, String)> {
    let t0 = std::time::Instant::now();
    let mut how = String::new();
    if driver.capabilities().deferred_free {
        match driver.sync() {
            Ok(done) => how.push_str(&format!("{done}; ")),
            Err(e) => how.push_str(&format!("sync failed ({e}); ")),
        }
    }
    let mut last = space(driver, driver_root)?;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let now = space(driver, driver_root)?;
        let stable = now.used == last.used;
        last = now;
        if stable {
            how.push_str(&format!("used stable after {:.1} s", t0.elapsed().as_secs_f64()));
            return Ok((last, how));
        }
        if t0.elapsed() >= max {
            how.push_str(&format!("used still changing after {:.1} s", t0.elapsed().as_secs_f64()));
            return Ok((last, how));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn du_counts_blocks_and_hardlinks_once() {
        let t = tempfile::tempdir().unwrap();
        let base = du_bytes(t.path());
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::write(t.path().join("d/a"), vec![1u8; 1 << 20]).unwrap();
        std::fs::hard_link(t.path().join("d/a"), t.path().join("b")).unwrap();
        let after = du_bytes(t.path());
        assert!(after >= base + (1 << 20), "{base} -> {after}");
        assert!(after < base + (2 << 20), "hard link counted twice: {base} -> {after}");
        assert!(page_cache_bytes() > 0);
        assert!(statvfs_used(t.path()).unwrap() > 0);
    }
}
