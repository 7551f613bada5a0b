//! Metadata operations of the probe: many small files created, stat'ed, renamed, chmod'ed and
//! unlinked in one directory (one timed sample per phase), and a recursive chown (one sample).
//! Plain system calls through libc, like the rest of the probe.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::ops::monotonic_ns;
use super::Sample;

/// Phases of [`super::Op::Meta`], in the order they run.
pub const META_PHASES: [&str; 5] = ["create", "stat", "rename", "chmod", "unlink"];

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn create(p: &Path, bytes: u64) -> io::Result<()> {
    let c = cpath(p)?;
    // SAFETY: c is a valid NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC, 0o644) };
    check(fd)?;
    let buf = vec![0x3Cu8; bytes as usize];
    let mut done = 0usize;
    let mut res = Ok(());
    while done < buf.len() {
        // SAFETY: buf[done..] is valid; fd is open.
        let n = unsafe { libc::write(fd, buf[done..].as_ptr().cast(), buf.len() - done) };
        if n <= 0 {
            res = Err(if n < 0 { io::Error::last_os_error() } else { io::Error::from_raw_os_error(libc::EIO) });
            break;
        }
        done += n as usize;
    }
    // SAFETY: fd is ours and closed once.
    let closed = check(unsafe { libc::close(fd) });
    res.and(closed)
}

/// `count` files of `bytes` in `dir` (created if missing): create, stat, rename, chmod, unlink
/// each file, one phase after the other; one sample per phase (bytes = files done, values
/// `files_count`). A phase stops at its first error, which its sample carries; later phases
/// still run on the files that exist.
pub fn meta(name: &str, index: usize, dir: &str, count: u64, bytes: u64, out: &mut Vec<Sample>) {
    let dir = PathBuf::from(dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        let mut s = Sample::new(name, index, "mkdir");
        s.path = Some(dir.display().to_string());
        s.error = Some(e.into());
        out.push(s);
        return;
    }
    let a = |i: u64| dir.join(format!("m{i}"));
    let b = |i: u64| dir.join(format!("r{i}"));
    for phase in META_PHASES {
        let t0 = monotonic_ns();
        let mut done = 0u64;
        let mut err = None;
        for i in 0..count {
            let r = match phase {
                "create" => create(&a(i), bytes),
                "stat" => cpath(&a(i)).and_then(|c| {
                    // SAFETY: st is a valid out-pointer, c a valid path.
                    let mut st: libc::stat = unsafe { std::mem::zeroed() };
                    check(unsafe { libc::stat(c.as_ptr(), &mut st) })
                }),
                "rename" => cpath(&a(i)).and_then(|x| {
                    let y = cpath(&b(i))?;
                    // SAFETY: two valid paths.
                    check(unsafe { libc::rename(x.as_ptr(), y.as_ptr()) })
                }),
                // SAFETY: a valid path.
                "chmod" => cpath(&b(i)).and_then(|c| check(unsafe { libc::chmod(c.as_ptr(), 0o600) })),
                // SAFETY: a valid path.
                _ => cpath(&b(i)).and_then(|c| check(unsafe { libc::unlink(c.as_ptr()) })),
            };
            match r {
                Ok(()) => done += 1,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        let mut s = Sample::new(name, index, phase);
        s.latency_ns = monotonic_ns() - t0;
        s.path = Some(dir.display().to_string());
        s.values.insert("files_count".into(), done);
        s.error = err.map(Into::into);
        out.push(s);
    }
}

/// lchown every entry under `path` (and `path`), depth first; one `total` sample whose
/// `values` hold `entries_count`.
pub fn chown(name: &str, index: usize, path: &str, uid: u32, gid: u32, out: &mut Vec<Sample>) {
    fn walk(p: &Path, uid: u32, gid: u32, n: &mut u64) -> io::Result<()> {
        let c = cpath(p)?;
        // SAFETY: a valid path.
        check(unsafe { libc::lchown(c.as_ptr(), uid, gid) })?;
        *n += 1;
        let md = std::fs::symlink_metadata(p)?;
        if md.is_dir() {
            for e in std::fs::read_dir(p)? {
                walk(&e?.path(), uid, gid, n)?;
            }
        }
        Ok(())
    }
    let t0 = monotonic_ns();
    let mut n = 0;
    let r = walk(Path::new(path), uid, gid, &mut n);
    let mut s = Sample::new(name, index, "total");
    s.latency_ns = monotonic_ns() - t0;
    s.path = Some(path.into());
    s.values.insert("entries_count".into(), n);
    s.error = r.err().map(Into::into);
    out.push(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_and_chown_in_a_tempdir() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("m");
        let mut out = Vec::new();
        meta("meta", 0, d.to_str().unwrap(), 50, 10, &mut out);
        assert_eq!(out.iter().map(|s| s.phase.as_str()).collect::<Vec<_>>(), META_PHASES);
        assert!(out.iter().all(|s| s.error.is_none() && s.values["files_count"] == 50));
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "every file unlinked");
        std::fs::create_dir_all(t.path().join("c/x")).unwrap();
        std::fs::write(t.path().join("c/x/f"), b"1").unwrap();
        let mut out = Vec::new();
        // uid/gid of the caller: works without root.
        // SAFETY: getuid/getgid cannot fail.
        let (u, g) = unsafe { (libc::getuid(), libc::getgid()) };
        chown("chown", 1, t.path().join("c").to_str().unwrap(), u, g, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].error.is_none());
        assert_eq!(out[0].values["entries_count"], 3);
    }
}
