//! The change set of a layer, from the three sources a backend can offer ([`DiffSource`]).
//!
//! - `Compare`: containerd's double walk over parent and layer trees (both sorted).
//! - `OverlayUpper`: the upper dir is the change set; 0/0 character devices are deletions,
//!   `trusted.overlay.opaque=y` directories hide the lower layers.
//! - `AufsBranch`: the branch is the change set; `.wh.<name>` files are deletions,
//!   `.wh..wh..opq` makes a directory opaque.
//!
//! Added vs Modified is decided by looking the path up in the merged view of the lower layers
//! (topmost first, honouring their own whiteouts and opaque directories).

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::fsutil::{self, Stat};
use super::{DiffSource, OPAQUE_MARKER, WHITEOUT_META_PREFIX, WHITEOUT_PREFIX};
use crate::driver::ChangeKind;

/// One change with what [`super::write`] needs to export it.
#[derive(Debug, Clone)]
pub struct Item {
    pub kind: ChangeKind,
    /// Relative to the layer root.
    pub path: PathBuf,
    /// The entry in the layer (for Added and Modified).
    pub source: Option<PathBuf>,
    /// The directory hides all lower content below it (exported as `.wh..wh..opq`).
    pub opaque: bool,
    /// A deletion already expressed by an opaque parent (no `.wh.` file needed).
    pub covered: bool,
}

/// An error while collecting changes, with the path it happened on.
#[derive(Debug)]
pub struct CollectError {
    pub path: PathBuf,
    pub what: String,
    pub source: io::Error,
}

type CResult<T> = std::result::Result<T, CollectError>;

trait At<T> {
    fn at(self, path: &Path, what: &str) -> CResult<T>;
}

impl<T> At<T> for io::Result<T> {
    fn at(self, path: &Path, what: &str) -> CResult<T> {
        self.map_err(|source| CollectError { path: path.to_path_buf(), what: what.to_string(), source })
    }
}

fn names(dir: &Path) -> CResult<Vec<OsString>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).at(dir, "reading directory")? {
        v.push(e.at(dir, "reading directory")?.file_name());
    }
    v.sort();
    Ok(v)
}

fn lstat_req(p: &Path) -> CResult<Stat> {
    fsutil::lstat(p)
        .at(p, "lstat")?
        .ok_or_else(|| CollectError { path: p.to_path_buf(), what: "lstat".into(), source: io::ErrorKind::NotFound.into() })
}

fn item(kind: ChangeKind, path: PathBuf, source: Option<PathBuf>) -> Item {
    Item { kind, path, source, opaque: false, covered: false }
}

pub fn collect(source: &DiffSource<'_>) -> CResult<Vec<Item>> {
    let mut out = Vec::new();
    match source {
        DiffSource::Compare { lower, upper } => compare_dir(*lower, upper, Path::new(""), &mut out)?,
        DiffSource::OverlayUpper { upper, lowers } => {
            let ctx = Layered { lowers, fmt: Fmt::Overlay };
            ctx.walk(upper, Path::new(""), false, &mut out)?
        }
        DiffSource::AufsBranch { branch, lowers } => {
            let ctx = Layered { lowers, fmt: Fmt::Aufs };
            ctx.walk(branch, Path::new(""), false, &mut out)?
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Compare: double walk

fn add_tree(abs: &Path, rel: &Path, out: &mut Vec<Item>) -> CResult<()> {
    let st = lstat_req(abs)?;
    out.push(item(ChangeKind::Added, rel.to_path_buf(), Some(abs.to_path_buf())));
    if fsutil::is_dir(&st) {
        for n in names(abs)? {
            add_tree(&abs.join(&n), &rel.join(&n), out)?;
        }
    }
    Ok(())
}

fn compare_dir(lower: Option<&Path>, upper: &Path, rel: &Path, out: &mut Vec<Item>) -> CResult<()> {
    let un = names(upper)?;
    let ln = match lower {
        Some(l) => names(l)?,
        None => Vec::new(),
    };
    let (mut i, mut j) = (0, 0);
    while i < ln.len() || j < un.len() {
        let ord = match (ln.get(i), un.get(j)) {
            (Some(a), Some(b)) => a.cmp(b),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                // Only in the parent: deleted (a directory is reported alone, not its children).
                out.push(item(ChangeKind::Deleted, rel.join(&ln[i]), None));
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                add_tree(&upper.join(&un[j]), &rel.join(&un[j]), out)?;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let name = &un[j];
                let lp = lower.expect("names came from lower").join(name);
                let up = upper.join(name);
                let ls = lstat_req(&lp)?;
                let us = lstat_req(&up)?;
                let crel = rel.join(name);
                if !same_entry(&lp, &ls, &up, &us)? {
                    out.push(item(ChangeKind::Modified, crel.clone(), Some(up.clone())));
                }
                if fsutil::is_dir(&us) {
                    let lower_dir = if fsutil::is_dir(&ls) { Some(lp.as_path()) } else { None };
                    compare_dir(lower_dir, &up, &crel, out)?;
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

fn xattrs_for_compare(p: &Path) -> CResult<Vec<(OsString, Vec<u8>)>> {
    let mut v = fsutil::xattrs(p).at(p, "reading xattrs")?;
    v.retain(|(k, _)| !fsutil::is_overlay_xattr(k));
    Ok(v)
}

/// containerd's `sameFile`, extended to directory mtimes (so that a re-applied diff restores
/// them) and to symlink targets.
pub fn same_entry(lp: &Path, ls: &Stat, up: &Path, us: &Stat) -> CResult<bool> {
    if ls.st_dev == us.st_dev && ls.st_ino == us.st_ino {
        return Ok(true);
    }
    if ls.st_mode != us.st_mode || ls.st_uid != us.st_uid || ls.st_gid != us.st_gid {
        return Ok(false);
    }
    let ft = fsutil::file_type(us);
    if (ft == libc::S_IFCHR || ft == libc::S_IFBLK) && ls.st_rdev != us.st_rdev {
        return Ok(false);
    }
    if ls.st_mtime != us.st_mtime || ls.st_mtime_nsec != us.st_mtime_nsec {
        return Ok(false);
    }
    if xattrs_for_compare(lp)? != xattrs_for_compare(up)? {
        return Ok(false);
    }
    if ft == libc::S_IFDIR {
        return Ok(true);
    }
    if ls.st_size != us.st_size {
        return Ok(false);
    }
    if ft == libc::S_IFLNK {
        return Ok(std::fs::read_link(lp).at(lp, "readlink")? == std::fs::read_link(up).at(up, "readlink")?);
    }
    if ft == libc::S_IFREG && us.st_mtime_nsec == 0 && us.st_size > 0 {
        // Equal whole-second mtimes may hide a change on filesystems that truncate
        // timestamps (containerd compares content then).
        return same_content(lp, up);
    }
    Ok(true)
}

fn same_content(a: &Path, b: &Path) -> CResult<bool> {
    let mut fa = std::fs::File::open(a).at(a, "open")?;
    let mut fb = std::fs::File::open(b).at(b, "open")?;
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let na = read_full(&mut fa, &mut ba).at(a, "read")?;
        let nb = read_full(&mut fb, &mut bb).at(b, "read")?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

// ---------------------------------------------------------------------------------------------
// Layered sources: overlay upper dirs and aufs branches

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fmt {
    Overlay,
    Aufs,
}

struct Layered<'a> {
    /// Topmost first.
    lowers: &'a [PathBuf],
    fmt: Fmt,
}

fn is_aufs_meta(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.starts_with(WHITEOUT_META_PREFIX.as_bytes())
}

impl Layered<'_> {
    fn is_whiteout_entry(&self, st: &Stat) -> bool {
        self.fmt == Fmt::Overlay && fsutil::is_overlay_whiteout(st)
    }

    fn is_opaque_dir(&self, p: &Path) -> bool {
        match self.fmt {
            Fmt::Overlay => fsutil::is_overlay_opaque(p),
            Fmt::Aufs => matches!(fsutil::lstat(&p.join(OPAQUE_MARKER)), Ok(Some(_))),
        }
    }

    /// Where `rel` is in the merged view of the lower layers: nothing (absent or whited
    /// out), the one non-directory, or every layer's directory that merges into it (topmost
    /// first).
    fn resolve(&self, rel: &Path) -> CResult<Vec<PathBuf>> {
        let comps: Vec<&OsStr> = rel.iter().collect();
        let mut cands: Vec<usize> = (0..self.lowers.len()).collect();
        for (i, c) in comps.iter().enumerate() {
            let prefix: PathBuf = comps[..=i].iter().collect();
            let parent: PathBuf = comps[..i].iter().collect();
            let mut next = Vec::new();
            let mut nondir = None;
            for &l in &cands {
                if self.fmt == Fmt::Aufs {
                    let mut wh = OsString::from(WHITEOUT_PREFIX);
                    wh.push(c);
                    let whp = self.lowers[l].join(&parent).join(&wh);
                    if fsutil::lstat(&whp).at(&whp, "lstat")?.is_some() {
                        break;
                    }
                }
                let p = self.lowers[l].join(&prefix);
                match fsutil::lstat(&p).at(&p, "lstat")? {
                    None => {}
                    Some(st) if self.is_whiteout_entry(&st) => break,
                    Some(st) if fsutil::is_dir(&st) => {
                        next.push(l);
                        if self.is_opaque_dir(&p) {
                            break;
                        }
                    }
                    Some(_) => {
                        // A non-directory under a directory of a higher layer is hidden.
                        if next.is_empty() {
                            nondir = Some(p);
                        }
                        break;
                    }
                }
            }
            if let Some(p) = nondir {
                return Ok(if i + 1 == comps.len() { vec![p] } else { Vec::new() });
            }
            if next.is_empty() {
                return Ok(Vec::new());
            }
            cands = next;
        }
        Ok(cands.iter().map(|&l| self.lowers[l].join(rel)).collect())
    }

    /// Names visible in directory `rel` of the merged lower view.
    fn merged_children(&self, rel: &Path) -> CResult<BTreeSet<OsString>> {
        let mut all = BTreeSet::new();
        for d in self.resolve(rel)? {
            if !fsutil::lstat(&d).at(&d, "lstat")?.map(|s| fsutil::is_dir(&s)).unwrap_or(false) {
                continue;
            }
            for n in names(&d)? {
                if !n.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()) {
                    all.insert(n);
                }
            }
        }
        let mut out = BTreeSet::new();
        for n in all {
            if !self.resolve(&rel.join(&n))?.is_empty() {
                out.insert(n);
            }
        }
        Ok(out)
    }

    /// Walk directory `abs` of the layer (`rel` below its root). `no_lower`: an opaque or
    /// newly added ancestor hides the lower layers here.
    fn walk(&self, abs: &Path, rel: &Path, no_lower: bool, out: &mut Vec<Item>) -> CResult<()> {
        for name in names(abs)? {
            let p = abs.join(&name);
            let crel = rel.join(&name);
            if self.fmt == Fmt::Aufs {
                if is_aufs_meta(&name) {
                    // .wh..wh..opq is read with its directory; .wh..wh.plnk/.aufs/.orph are
                    // aufs's own bookkeeping.
                    continue;
                }
                if let Some(target) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
                    let trel = rel.join(OsStr::from_bytes(target));
                    if !no_lower && !self.resolve(&trel)?.is_empty() {
                        out.push(item(ChangeKind::Deleted, trel, None));
                    }
                    continue;
                }
            }
            let st = lstat_req(&p)?;
            if self.is_whiteout_entry(&st) {
                if !no_lower && !self.resolve(&crel)?.is_empty() {
                    out.push(item(ChangeKind::Deleted, crel, None));
                }
                continue;
            }
            if self.fmt == Fmt::Overlay {
                for x in ["trusted.overlay.redirect", "trusted.overlay.metacopy"] {
                    if matches!(xattr::get(&p, x), Ok(Some(_))) {
                        return Err(CollectError {
                            path: crel,
                            what: format!(
                                "{x} is set: the upper dir alone does not hold this entry (mount overlay with redirect_dir=off,metacopy=off for native diffs)"
                            ),
                            source: io::ErrorKind::InvalidData.into(),
                        });
                    }
                }
            }
            let lower = if no_lower { Vec::new() } else { self.resolve(&crel)? };
            let kind = if lower.is_empty() { ChangeKind::Added } else { ChangeKind::Modified };
            if !fsutil::is_dir(&st) {
                out.push(item(kind, crel, Some(p)));
                continue;
            }
            let lower_is_dir = match lower.first() {
                Some(l) => fsutil::lstat(l).at(l, "lstat")?.map(|s| fsutil::is_dir(&s)).unwrap_or(false),
                None => false,
            };
            if self.is_opaque_dir(&p) {
                let mut it = item(kind, crel.clone(), Some(p.clone()));
                it.opaque = true;
                out.push(it);
                if lower_is_dir {
                    // What the opaque directory hides is deleted; the marker already says so.
                    let present: BTreeSet<OsString> = names(&p)?.into_iter().collect();
                    for n in self.merged_children(&crel)? {
                        let shown_in_upper = present.contains(&n)
                            && !lstat_req(&p.join(&n)).map(|s| self.is_whiteout_entry(&s)).unwrap_or(true);
                        if !shown_in_upper {
                            let mut d = item(ChangeKind::Deleted, crel.join(&n), None);
                            d.covered = true;
                            out.push(d);
                        }
                    }
                }
                self.walk(&p, &crel, true, out)?;
                continue;
            }
            if lower_is_dir {
                // A directory copied up only because something below it changed keeps the
                // lower's metadata; it is not itself a change.
                let l = &lower[0];
                let ls = lstat_req(l)?;
                if !same_entry(l, &ls, &p, &st)? {
                    out.push(item(ChangeKind::Modified, crel.clone(), Some(p.clone())));
                }
                self.walk(&p, &crel, false, out)?;
            } else {
                out.push(item(kind, crel.clone(), Some(p.clone())));
                self.walk(&p, &crel, true, out)?;
            }
        }
        Ok(())
    }
}
