//! Kernel aufs: the branch options Docker's aufs graphdriver used.
//!
//! `mount -t aufs -o br:<rw>=rw:<ro>=ro+wh:...` with whiteouts honoured in every read-only
//! branch (`+wh`). Mount data is limited to one page, so the first mount takes as many
//! branches as fit and the rest are added one by one with `MS_REMOUNT` and `append:<dir>=ro+wh`.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

/// Options appended to the branch list (Docker's: direct IO allowed, one shared xino file).
const TAIL: &str = ",dio,xino=/dev/shm/aufs.xino";

/// The mount data of the first mount and of each append remount.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub first: String,
    pub appends: Vec<String>,
}

/// Plan a mount of `branches` (topmost first) within `page` bytes of mount data.
pub fn plan(branches: &[PathBuf], writable: bool, page: usize) -> Plan {
    let mode = |i: usize| if i == 0 && writable { "rw" } else { "ro+wh" };
    let budget = page.saturating_sub(TAIL.len() + 1); // +1: the data is a C string
    let mut first = String::from("br");
    let mut i = 0;
    while i < branches.len() {
        let part = format!(":{}={}", branches[i].display(), mode(i));
        // The top branch always goes in the first mount, whatever its length.
        if i > 0 && first.len() + part.len() > budget {
            break;
        }
        first.push_str(&part);
        i += 1;
    }
    first.push_str(TAIL);
    let appends = branches[i..]
        .iter()
        .enumerate()
        .map(|(j, b)| format!("append:{}={}", b.display(), mode(i + j)))
        .collect();
    Plan { first, appends }
}

pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// Mount the union; on a failed append the half-made mount is removed again.
pub fn mount(branches: &[PathBuf], writable: bool, target: &Path) -> std::io::Result<()> {
    let p = plan(branches, writable, page_size());
    let ro = if writable { MsFlags::empty() } else { MsFlags::MS_RDONLY };
    crate::sys::mounts::mount("none", target, "aufs", ro, Some(&p.first))?;
    for a in &p.appends {
        if let Err(e) = crate::sys::mounts::mount("none", target, "aufs", MsFlags::MS_REMOUNT | ro, Some(a)) {
            let _ = crate::sys::mounts::unmount(target);
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_stack_fits_one_mount() {
        let br = vec![PathBuf::from("/r/2"), PathBuf::from("/r/1")];
        let p = plan(&br, true, 4096);
        assert_eq!(p.first, "br:/r/2=rw:/r/1=ro+wh,dio,xino=/dev/shm/aufs.xino");
        assert!(p.appends.is_empty());
        let p = plan(&br, false, 4096);
        assert_eq!(p.first, "br:/r/2=ro+wh:/r/1=ro+wh,dio,xino=/dev/shm/aufs.xino");
    }

    #[test]
    fn deep_stack_is_appended_within_a_page() {
        let br: Vec<PathBuf> =
            (0..200).map(|i| PathBuf::from(format!("/var/lib/cowbench/aufs/l/{i:08}"))).collect();
        let p = plan(&br, true, 4096);
        assert!(p.first.len() < 4096, "first mount data {} bytes", p.first.len());
        assert!(!p.appends.is_empty());
        let in_first = p.first.matches('=').count() - 1; // minus xino=
        assert_eq!(in_first + p.appends.len(), 200);
        // order is kept: the first append is the branch right after the last one mounted
        assert_eq!(p.appends[0], format!("append:{}=ro+wh", br[in_first].display()));
        assert!(p.first.starts_with("br:/var/lib/cowbench/aufs/l/00000000=rw:"));
    }
}
