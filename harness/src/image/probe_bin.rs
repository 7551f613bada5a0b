//! Finding (or building) the static `cowbench-probe` binary that goes into every image.
//!
//! Order: `$COWBENCH_PROBE_BIN`; else, when the cowbench workspace it was built from is
//! present, build it (cargo makes that a no-op when it is up to date):
//!
//! ```text
//! RUSTFLAGS="-C target-feature=+crt-static" \
//!   cargo build -p cowbench-probe --release --bin cowbench-probe --target x86_64-unknown-linux-gnu
//! ```
//!
//! An explicit `--target` keeps the static build in its own directory, so an ordinary
//! `cargo build` of the workspace never overwrites it with a dynamically linked one, and
//! RUSTFLAGS then reach only the target crates, not build scripts. Every candidate must be a
//! statically linked ELF (no PT_INTERP): images hold nothing but busybox and the probe.
//! Without a workspace (an installed cowbench), a static `cowbench-probe` next to the
//! executable or in its target directory (`<target>/<triple>/release/`) is used.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Error, Result};

pub const ENV: &str = "COWBENCH_PROBE_BIN";
pub const NAME: &str = "cowbench-probe";

/// The target triple of the static build.
pub fn triple() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// True when `path` is an ELF executable without a program interpreter (static or static-pie).
pub fn is_static(path: &Path) -> io::Result<bool> {
    let mut f = fs::File::open(path)?;
    let mut hdr = [0u8; 64];
    f.read_exact(&mut hdr)?;
    if &hdr[..4] != b"\x7fELF" || hdr[4] != 2 || hdr[5] != 1 {
        // Only 64-bit little-endian ELF is built here.
        return Ok(false);
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let phoff = u64_at(&hdr, 32);
    let phentsize = u16_at(&hdr, 54);
    let phnum = u16_at(&hdr, 56);
    let mut ph = vec![0u8; (phentsize * phnum) as usize];
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(phoff))?;
    f.read_exact(&mut ph)?;
    const PT_INTERP: u32 = 3;
    for i in 0..phnum {
        let o = (i * phentsize) as usize;
        let typ = u32::from_le_bytes(ph[o..o + 4].try_into().unwrap());
        if typ == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

fn usable(p: &Path) -> bool {
    p.is_file() && is_static(p).unwrap_or(false)
}

/// Candidate paths, in order, without building.
pub fn candidates() -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = std::env::var_os(ENV) {
        c.push(PathBuf::from(p));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            c.push(dir.join(NAME));
            // target/debug/deps/x → target/debug → target
            for anc in dir.ancestors().take(4) {
                c.push(anc.join(triple()).join("release").join(NAME));
            }
        }
    }
    if let Some(t) = target_dir() {
        c.push(t.join(triple()).join("release").join(NAME));
    }
    c
}

/// The workspace this binary was built from, if it is still there.
fn workspace() -> Option<PathBuf> {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.to_path_buf();
    ws.join("workloads").join("Cargo.toml").is_file().then_some(ws)
}

fn target_dir() -> Option<PathBuf> {
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(t));
    }
    workspace().map(|w| w.join("target"))
}

/// The probe binary: `$COWBENCH_PROBE_BIN`; else, when the cowbench workspace is present,
/// the result of the cargo build above (a no-op when it is up to date, so a changed probe is
/// never silently replaced by a stale one); else a static binary next to the executable or in
/// its target directory. Resolved once per process.
pub fn find_or_build() -> Result<PathBuf> {
    static FOUND: std::sync::OnceLock<std::result::Result<PathBuf, String>> = std::sync::OnceLock::new();
    FOUND.get_or_init(|| resolve().map_err(|e| e.to_string())).clone().map_err(Error::Probe)
}

fn resolve() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(ENV) {
        let p = PathBuf::from(p);
        // An explicit path that is unusable is an error, not something to silently replace.
        return if usable(&p) {
            Ok(p)
        } else {
            Err(Error::Probe(format!("{ENV}={} is not a statically linked executable", p.display())))
        };
    }
    let built = if workspace().is_some() { Some(build()) } else { None };
    match built {
        Some(Ok(p)) => Ok(p),
        Some(Err(e)) => {
            let found = candidates().into_iter().find(|p| usable(p));
            match found {
                Some(p) => {
                    log::warn!("{e}; using {}", p.display());
                    Ok(p)
                }
                None => Err(e),
            }
        }
        None => candidates()
            .into_iter()
            .find(|p| usable(p))
            .ok_or_else(|| Error::Probe(format!("{NAME} not found: set {ENV} to a static build of it"))),
    }
}

/// Build the static probe with cargo (see the module docs).
pub fn build() -> Result<PathBuf> {
    let ws = workspace().ok_or_else(|| {
        Error::Probe(format!("{NAME} not found (set {ENV}) and no cowbench workspace to build it from"))
    })?;
    let target = target_dir().unwrap_or_else(|| ws.join("target"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    log::info!("building the static {NAME} in {}", ws.display());
    let out = Command::new(cargo)
        .current_dir(&ws)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .args(["build", "-p", "cowbench-probe", "--release", "--bin", NAME, "--target", &triple(), "--target-dir"])
        .arg(&target)
        .output()
        .map_err(|e| Error::Probe(format!("run cargo to build {NAME}: {e}")))?;
    if !out.status.success() {
        return Err(Error::Probe(format!("building {NAME} failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    let p = target.join(triple()).join("release").join(NAME);
    if !usable(&p) {
        return Err(Error::Probe(format!("{} was built but is not statically linked", p.display())));
    }
    Ok(p)
}

/// The static busybox for the base layer: `$COWBENCH_BUSYBOX`, else `/bin/busybox`
/// (Debian `busybox-static`).
pub fn busybox() -> Result<PathBuf> {
    let p = std::env::var_os("COWBENCH_BUSYBOX").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/bin/busybox"));
    if usable(&p) {
        Ok(p)
    } else {
        Err(Error::Probe(format!(
            "{} is missing or not statically linked (install Debian busybox-static, or set COWBENCH_BUSYBOX)",
            p.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_detection() {
        // The test binary itself is dynamically linked; busybox-static is not.
        let me = std::env::current_exe().unwrap();
        assert!(!is_static(&me).unwrap());
        if Path::new("/bin/busybox").exists() {
            assert!(is_static(Path::new("/bin/busybox")).unwrap());
        }
        let t = tempfile::NamedTempFile::new().unwrap();
        fs::write(t.path(), vec![0u8; 128]).unwrap();
        assert!(!is_static(t.path()).unwrap());
    }
}
