//! Applying a layer tar into a layer directory.
//!
//! Every entry is written through a directory descriptor reached from the layer root without
//! following symlinks ([`super::safepath`]); names are normalised lexically and refused when
//! they leave the root. Whiteouts become the backend's native form ([`Whiteouts`]).
//!
//! Order of metadata, per entry: content, owner, mode (chown clears setuid/setgid, so mode
//! comes after it), xattrs (chown also clears `security.capability`), mtime last. Directory
//! mtimes are set once the whole tar is applied, innermost last-seen first, as tar-rs's
//! `unpack` does, because writing children changes them.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tar::EntryType;
use xattr::FileExt;

use super::compress::{decompress, Compression};
use super::fsutil::{self, Dir};
use super::safepath::{display_name, normalize, open_dir, RelPath, ResolveError};
use super::stream::Guard;
use super::written::{NodeId, Written};
use super::{Whiteouts, OPAQUE_MARKER, WHITEOUT_META_PREFIX, WHITEOUT_PREFIX};
use crate::driver::ApplyStats;
use crate::error::{Error, Result};

impl xattr::FileExt for Dir {}

/// Metadata of one entry, from its header and PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, u32),
    xattrs: Vec<(OsString, Vec<u8>)>,
}

struct Applier<'a> {
    driver: &'a str,
    key: &'a str,
    dest: &'a Path,
    root: Dir,
    whiteouts: Whiteouts<'a>,
    /// Entries this tar wrote and the directories holding them; an opaque marker or whiteout
    /// never removes them.
    tree: Written,
    /// Directory entries and their mtimes, set at the end.
    dirs: Vec<(NodeId, (i64, u32))>,
    stats: ApplyStats,
}

pub(super) fn apply(
    driver: &str,
    key: &str,
    tar: &mut dyn Read,
    dest: &Path,
    whiteouts: Whiteouts<'_>,
) -> Result<ApplyStats> {
    let root = Dir::open(dest)
        .map_err(|e| Error::io(driver, Some(key), format!("open layer directory {}", dest.display()), e))?;
    let archive_err = |entry: Option<PathBuf>, message: String| Error::Archive {
        driver: driver.into(),
        key: key.into(),
        entry,
        message,
    };
    let (compression, stream) = decompress(tar).map_err(|e| archive_err(None, format!("reading layer tar: {e}")))?;
    let (guard, stream) = Guard::new(stream, compression_name(compression));
    let mut ar = tar::Archive::new(stream);
    let mut ap = Applier {
        driver,
        key,
        dest,
        root,
        whiteouts,
        tree: Written::new(),
        dirs: Vec::new(),
        stats: ApplyStats::default(),
    };
    // A failure of the stream itself (decompression, checksum, an oversized header) is
    // reported as such, whichever reader met it.
    let after = |last: &Option<PathBuf>| last.as_ref().map(|p| format!(" (after entry {p:?})")).unwrap_or_default();
    // Between entries (no entry to name), the message says which entry came last.
    let stream_err = |entry: Option<PathBuf>, last: &Option<PathBuf>, fallback: String| match guard.failure() {
        Some(f) if entry.is_some() => archive_err(entry, f),
        Some(f) => archive_err(None, format!("{f}{}", after(last))),
        None => archive_err(entry, fallback),
    };
    let mut entries = ar.entries().map_err(|e| archive_err(None, format!("reading layer tar: {e}")))?;
    let mut last: Option<PathBuf> = None;
    loop {
        guard.headers_begin();
        let next = entries.next();
        guard.headers_end();
        let mut entry = match next {
            None => break,
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                return Err(stream_err(None, &last, format!("corrupt or truncated layer tar{}: {e}", after(&last))));
            }
        };
        let raw = entry.path_bytes().into_owned();
        let shown = display_name(&raw);
        // The body is read to its end before the next header (see `stream`), also when the
        // entry did not need it.
        let done = ap.entry(&raw, &mut entry).and_then(|()| {
            io::copy(&mut entry, &mut io::sink())
                .map(drop)
                .map_err(|e| archive_err(Some(shown.clone()), format!("reading entry data: {e}")))
        });
        if let Err(e) = done {
            return Err(match guard.failure() {
                Some(_) => stream_err(Some(shown), &last, String::new()),
                None => e,
            });
        }
        last = Some(shown);
    }
    if !guard.saw_end() && guard.pos() > 0 {
        // An empty stream is an empty layer (as for Go's archive/tar); anything else must end
        // with the end-of-archive marker, or it was cut short.
        return Err(archive_err(
            None,
            format!("truncated layer tar: it ends without the end-of-archive marker{}", after(&last)),
        ));
    }
    // Read to the end: the gzip trailer (CRC-32 and length) and zstd's frame checksum are
    // only checked when the decompressor reaches them, after the tar's end marker.
    let mut rest = ar.into_inner();
    io::copy(&mut rest, &mut io::sink())
        .map_err(|e| stream_err(None, &last, format!("reading the end of the layer stream{}: {e}", after(&last))))?;
    ap.finish_dirs()?;
    Ok(ap.stats)
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "uncompressed",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    }
}

/// An entry type by name, with its type byte (never tar-rs's Debug form).
pub(super) fn type_name(t: EntryType) -> String {
    let b = t.as_byte();
    let name = match b {
        b'0' | b'\0' => "regular file",
        b'1' => "hardlink",
        b'2' => "symlink",
        b'3' => "character device",
        b'4' => "block device",
        b'5' => "directory",
        b'6' => "fifo",
        b'7' => "contiguous file",
        b'g' => "PAX global header",
        b'x' => "PAX extended header",
        b'L' => "GNU long name",
        b'K' => "GNU long link",
        b'S' => "GNU sparse file",
        b'D' => "GNU dump directory",
        b'M' => "GNU multi-volume continuation",
        b'V' => "GNU volume label",
        _ => "unknown type",
    };
    if b.is_ascii_graphic() {
        format!("'{}' ({name})", b as char)
    } else {
        format!("{b} ({name})")
    }
}

/// A decimal number as PAX writes it: digits only (no sign, no blanks), fitting in a u64.
fn pax_number(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn pax_records<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if let Ok(k) = ext.key() {
                out.push((k.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

/// PAX `mtime` is decimal seconds with an optional fraction (nanosecond precision).
fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let secs: i64 = secs.parse().ok()?;
    let mut ns: u32 = 0;
    let digits: String = frac.chars().take(9).collect();
    if !digits.is_empty() {
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        ns = format!("{digits:0<9}").parse().ok()?;
    }
    if secs < 0 && ns > 0 {
        // "-1.5" means 1.5 s before the epoch.
        return Some((secs - 1, 1_000_000_000 - ns));
    }
    Some((secs, ns))
}

impl<'a> Applier<'a> {
    fn err(&self, entry: &Path, message: impl Into<String>) -> Error {
        Error::Archive { driver: self.driver.into(), key: self.key.into(), entry: Some(entry.to_path_buf()), message: message.into() }
    }

    fn io_err(&self, entry: &Path, what: &str, e: io::Error) -> Error {
        if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
            return Error::io(self.driver, Some(self.key), format!("{what} {entry:?}"), e);
        }
        self.err(entry, format!("{what}: {e}"))
    }

    fn resolve_err(&self, entry: &Path, what: &str, e: ResolveError) -> Error {
        match e {
            ResolveError::Io(e) => self.io_err(entry, what, e),
            other => self.err(entry, format!("{what}: {other}")),
        }
    }

    /// The parent directory of `rel`, created as needed, never through a symlink.
    fn parent_dir(&self, shown: &Path, rel: &RelPath, create: bool) -> Result<Option<Dir>> {
        let parent = &rel.0[..rel.0.len() - 1];
        match open_dir(&self.root, parent, create, |_| {}) {
            Ok(d) => Ok(Some(d)),
            Err(ResolveError::Missing { .. }) if !create => Ok(None),
            Err(e) => Err(self.resolve_err(shown, "cannot reach the parent directory", e)),
        }
    }

    fn keeps(&self, rel: &RelPath) -> bool {
        self.tree.find(rel).is_some()
    }

    fn entry<R: Read>(&mut self, raw: &[u8], entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let shown = display_name(raw);
        let etype = entry.header().entry_type();
        match etype {
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink => return Ok(()),
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::GNUSparse
            | EntryType::Directory
            | EntryType::Symlink
            | EntryType::Link
            | EntryType::Char
            | EntryType::Block
            | EntryType::Fifo => {}
            // Refused, as containerd does: skipping a type cowbench does not know could leave
            // a layer different from what the image means.
            other => return Err(self.err(&shown, format!("unsupported tar entry type {}", type_name(other)))),
        }
        let rel = normalize(raw).map_err(|m| self.err(&shown, m))?;
        check_whiteout_components(raw).map_err(|m| self.err(&shown, m))?;
        if rel.is_root() {
            // The layer root belongs to the backend, not to the tar (containerd ignores it too).
            return Ok(());
        }
        let name = rel.name().as_bytes();
        if name.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            let keep_file = self.whiteout(&shown, &rel)?;
            if !keep_file {
                return Ok(());
            }
        }
        let meta = self.meta(&shown, entry)?;
        self.write_entry(&shown, &rel, etype, entry, &meta)?;
        let node = self.tree.insert(&rel);
        if etype == EntryType::Directory {
            self.dirs.push((node, meta.mtime));
        }
        self.stats.entries += 1;
        Ok(())
    }

    fn meta<R: Read>(&self, shown: &Path, entry: &mut tar::Entry<'_, R>) -> Result<Meta> {
        let h = entry.header();
        let bad = |what: &str, e: io::Error| self.err(shown, format!("bad {what} field in header: {e}"));
        // An all-blank numeric field (some writers leave uid/gid/mtime empty) reads as 0.
        let blank = |raw: &[u8]| raw.iter().all(|b| *b == 0 || *b == b' ');
        let old = h.as_old();
        let num = |what: &str, v: io::Result<u64>, raw: &[u8]| match v {
            Ok(v) => Ok(v),
            Err(_) if blank(raw) => Ok(0),
            Err(e) => Err(bad(what, e)),
        };
        let mode = num("mode", h.mode().map(u64::from), &old.mode)? as u32 & 0o7777;
        let mut uid = num("uid", h.uid(), &old.uid)?;
        let mut gid = num("gid", h.gid(), &old.gid)?;
        let mut mtime = (num("mtime", h.mtime(), &old.mtime)? as i64, 0u32);
        let mut xattrs = Vec::new();
        let pax = pax_records(entry).map_err(|e| self.err(shown, format!("bad PAX header: {e}")))?;
        for (k, v) in pax {
            let bad = |what: &str| self.err(shown, format!("bad PAX {what} record {:?}", String::from_utf8_lossy(&v)));
            match k.as_str() {
                "uid" => uid = pax_number(&v).ok_or_else(|| bad("uid"))?,
                "gid" => gid = pax_number(&v).ok_or_else(|| bad("gid"))?,
                // tar-rs ignores a `size` it cannot parse and reads the header's instead; a
                // layer whose readers could disagree on where an entry ends is refused.
                "size" => {
                    pax_number(&v).ok_or_else(|| bad("size"))?;
                }
                "mtime" => mtime = parse_pax_time(&v).ok_or_else(|| bad("mtime"))?,
                "atime" | "ctime" => {
                    parse_pax_time(&v).ok_or_else(|| bad(&k))?;
                }
                _ => {
                    if let Some(x) = k.strip_prefix("SCHILY.xattr.") {
                        // overlayfs's own xattrs (opaque, redirect, metacopy, origin) would let a
                        // tar change how the kernel reads lower layers; only the opaque marker
                        // entry may set one.
                        if !fsutil::is_overlay_xattr(OsStr::new(x)) {
                            xattrs.push((OsString::from(x), v));
                        }
                    }
                }
            }
        }
        let id = |v: u64, what: &str| u32::try_from(v).map_err(|_| self.err(shown, format!("{what} {v} out of range")));
        Ok(Meta { mode, uid: id(uid, "uid")?, gid: id(gid, "gid")?, mtime, xattrs })
    }

    /// Handle a `.wh.` entry. Returns true when the entry itself must also be written as a
    /// plain file (aufs keeps its whiteouts as files).
    fn whiteout(&mut self, shown: &Path, rel: &RelPath) -> Result<bool> {
        let name = rel.name().as_bytes();
        let parent = rel.parent();
        let aufs = matches!(self.whiteouts, Whiteouts::Aufs);
        if name == OPAQUE_MARKER.as_bytes() {
            self.stats.whiteouts += 1;
            let create = true;
            let pdir = self.parent_dir(shown, rel, create)?.expect("created");
            if !matches!(self.whiteouts, Whiteouts::Custom(_)) {
                // The marker hides lower content only: what this tar already wrote in the
                // directory stays, what it writes later is written after this.
                self.clean_opaque(&pdir, &parent).map_err(|e| self.io_err(shown, "emptying opaque directory", e))?;
            }
            match &self.whiteouts {
                Whiteouts::Overlay => {
                    pdir.set_xattr(OsStr::new(""), OsStr::new("trusted.overlay.opaque"), b"y")
                        .map_err(|e| self.io_err(shown, "setting trusted.overlay.opaque", e))?;
                }
                Whiteouts::Delete | Whiteouts::Aufs => {}
                Whiteouts::Custom(h) => {
                    h.opaque(self.dest, &parent.to_path()).map_err(|e| self.io_err(shown, "opaque directory", e))?;
                }
            }
            self.mark_dir_seen(&parent);
            return Ok(aufs);
        }
        if name.starts_with(WHITEOUT_META_PREFIX.as_bytes()) {
            // aufs's own bookkeeping (.wh..wh.plnk, .wh..wh.aufs, .wh..wh.orph): never layer content.
            return Ok(false);
        }
        let target = &name[WHITEOUT_PREFIX.len()..];
        if target.is_empty() || target == b"." || target == b".." || target.contains(&b'/') {
            return Err(self.err(shown, "whiteout names no entry"));
        }
        let target_name = OsStr::from_bytes(target);
        let target_rel = parent.join(target_name);
        self.stats.whiteouts += 1;
        // Whiteouts apply to lower layers only: an entry this tar wrote stays (OCI image spec,
        // "Whiteouts").
        let own = self.keeps(&target_rel);
        match &self.whiteouts {
            Whiteouts::Overlay => {
                let pdir = self.parent_dir(shown, rel, true)?.expect("created");
                if !own {
                    pdir.remove_all(target_name).map_err(|e| self.io_err(shown, "removing whited-out entry", e))?;
                    pdir.mknod(target_name, libc::S_IFCHR, 0)
                        .map_err(|e| self.io_err(shown, "creating overlay whiteout device", e))?;
                }
                Ok(false)
            }
            Whiteouts::Delete => {
                if let Some(pdir) = self.parent_dir(shown, rel, false)? {
                    if !own {
                        pdir.remove_all(target_name).map_err(|e| self.io_err(shown, "removing whited-out entry", e))?;
                    }
                }
                Ok(false)
            }
            Whiteouts::Aufs => {
                let pdir = self.parent_dir(shown, rel, true)?.expect("created");
                if !own {
                    pdir.remove_all(target_name).map_err(|e| self.io_err(shown, "removing whited-out entry", e))?;
                }
                Ok(true)
            }
            Whiteouts::Custom(h) => {
                // Parents are created safely first so the handler never meets a symlinked one.
                self.parent_dir(shown, rel, true)?;
                h.whiteout(self.dest, &target_rel.to_path()).map_err(|e| self.io_err(shown, "whiteout", e))?;
                Ok(false)
            }
        }
    }

    fn mark_dir_seen(&mut self, rel: &RelPath) {
        self.tree.insert(rel);
    }

    /// Remove what `dir` (at `rel`) held before this tar, keeping what this tar wrote. Walks
    /// the directories this tar wrote below it without recursion, one open directory at a time.
    fn clean_opaque(&self, dir: &Dir, rel: &RelPath) -> io::Result<()> {
        let Some(top) = self.tree.find(rel) else {
            for name in dir.names()? {
                dir.remove_all(&name)?;
            }
            return Ok(());
        };
        let mut stack = vec![top];
        while let Some(node) = stack.pop() {
            let mut d = dir.try_clone()?;
            let mut reached = true;
            for c in &self.tree.path(node)[rel.0.len()..] {
                match d.open_dir(c) {
                    Ok(sub) => d = sub,
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR) | Some(libc::ELOOP) | Some(libc::ENOENT)) => {
                        reached = false;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if !reached {
                continue;
            }
            for name in d.names()? {
                match self.tree.child(node, &name) {
                    Some(child) => {
                        if d.stat(&name)?.is_some_and(|st| fsutil::is_dir(&st)) {
                            stack.push(child);
                        }
                    }
                    None => d.remove_all(&name)?,
                }
            }
        }
        Ok(())
    }

    fn write_entry<R: Read>(
        &mut self,
        shown: &Path,
        rel: &RelPath,
        etype: EntryType,
        entry: &mut tar::Entry<'_, R>,
        meta: &Meta,
    ) -> Result<()> {
        let name = rel.name().to_os_string();
        // A hardlink target is resolved before anything at this path is replaced.
        let link_src = if etype == EntryType::Link {
            let raw = entry.link_name_bytes().ok_or_else(|| self.err(shown, "hardlink without a target"))?.into_owned();
            let target = normalize(&raw).map_err(|m| self.err(shown, format!("hardlink target {:?}: {m}", display_name(&raw))))?;
            if target.is_root() {
                return Err(self.err(shown, "hardlink to the layer root"));
            }
            if target == *rel {
                // A link to itself: the entry is already there.
                return Ok(());
            }
            let tdir = match open_dir(&self.root, &target.0[..target.0.len() - 1], false, |_| {}) {
                Ok(d) => d,
                Err(e) => return Err(self.resolve_err(shown, &format!("hardlink target {:?}", target.to_path()), e)),
            };
            match tdir.stat(target.name()) {
                Ok(Some(st)) if fsutil::is_dir(&st) => {
                    return Err(self.err(shown, format!("hardlink target {:?} is a directory", target.to_path())))
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(self.err(
                        shown,
                        format!("hardlink target {:?} is not in the layer (it must come earlier in the tar)", target.to_path()),
                    ))
                }
                Err(e) => return Err(self.io_err(shown, "hardlink target", e)),
            }
            Some((tdir, target.name().to_os_string()))
        } else {
            None
        };

        let pdir = self.parent_dir(shown, rel, true)?.expect("created");
        let existing = pdir.stat(&name).map_err(|e| self.io_err(shown, "stat", e))?;
        let is_dir_entry = etype == EntryType::Directory;
        if let Some(st) = &existing {
            // Anything but a directory over a directory is replaced, as containerd's applier
            // does; the directory itself (and what it holds) stays.
            if !(is_dir_entry && fsutil::is_dir(st)) {
                pdir.remove_all(&name).map_err(|e| self.io_err(shown, "replacing existing entry", e))?;
            }
        }
        let mut content_bytes = 0;
        let io = |what: &str, e: io::Error| self.io_err(shown, what, e);
        match etype {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mut f = pdir.create_file(&name, 0o600).map_err(|e| io("creating file", e))?;
                let n = io::copy(entry, &mut f).map_err(|e| io("writing file content", e))?;
                if n != entry.size() {
                    return Err(self.err(
                        shown,
                        format!("truncated layer tar: the entry's data ends after {n} of {} bytes", entry.size()),
                    ));
                }
                content_bytes = n;
                std::os::unix::fs::fchown(&f, Some(meta.uid), Some(meta.gid)).map_err(|e| io("chown", e))?;
                f.set_permissions(std::fs::Permissions::from_mode(meta.mode)).map_err(|e| io("chmod", e))?;
                for (k, v) in &meta.xattrs {
                    f.set_xattr(k, v).map_err(|e| io(&format!("setting xattr {}", k.to_string_lossy()), e))?;
                }
                let ts = libc::timespec { tv_sec: meta.mtime.0 as _, tv_nsec: meta.mtime.1 as _ };
                let rc = unsafe { libc::futimens(std::os::fd::AsRawFd::as_raw_fd(&f), [ts, ts].as_ptr()) };
                if rc < 0 {
                    return Err(io("setting mtime", io::Error::last_os_error()));
                }
            }
            EntryType::Directory => {
                if existing.as_ref().map(fsutil::is_dir) != Some(true) {
                    pdir.mkdir(&name, 0o700).map_err(|e| io("mkdir", e))?;
                }
                let d = pdir.open_dir(&name).map_err(|e| io("opening directory", e))?;
                let rc = unsafe { libc::fchown(d.raw(), meta.uid, meta.gid) };
                if rc < 0 {
                    return Err(io("chown", io::Error::last_os_error()));
                }
                let rc = unsafe { libc::fchmod(d.raw(), meta.mode as libc::mode_t) };
                if rc < 0 {
                    return Err(io("chmod", io::Error::last_os_error()));
                }
                if existing.is_some() {
                    // The tar describes the directory fully: xattrs it does not list go, except
                    // overlayfs's own (opaque markers of this same layer).
                    // A filesystem without xattrs (zfs-fuse) has none to drop.
                    let have: Vec<OsString> = match d.list_xattr() {
                        Ok(names) => names.collect(),
                        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Vec::new(),
                        Err(e) => return Err(io("listing xattrs", e)),
                    };
                    for k in have {
                        if !fsutil::is_overlay_xattr(&k) && !meta.xattrs.iter().any(|(n, _)| *n == k) {
                            d.remove_xattr(&k).map_err(|e| io("removing xattr", e))?;
                        }
                    }
                }
                for (k, v) in &meta.xattrs {
                    d.set_xattr(OsStr::new(""), k, v).map_err(|e| io(&format!("setting xattr {}", k.to_string_lossy()), e))?;
                }
            }
            EntryType::Symlink => {
                let target = entry.link_name_bytes().ok_or_else(|| self.err(shown, "symlink without a target"))?.into_owned();
                if target.is_empty() {
                    return Err(self.err(shown, "symlink with an empty target"));
                }
                // Stored as is: a symlink is never followed by cowbench, so its target may
                // point anywhere.
                pdir.symlink(OsStr::from_bytes(&target), &name).map_err(|e| io("symlink", e))?;
                pdir.lchown(&name, meta.uid, meta.gid).map_err(|e| io("lchown", e))?;
                for (k, v) in &meta.xattrs {
                    pdir.set_xattr(&name, k, v).map_err(|e| io(&format!("setting xattr {}", k.to_string_lossy()), e))?;
                }
                pdir.set_mtime(&name, meta.mtime.0, meta.mtime.1).map_err(|e| io("setting mtime", e))?;
            }
            EntryType::Link => {
                let (tdir, tname) = link_src.expect("resolved above");
                pdir.link_from(&tdir, &tname, &name).map_err(|e| io("hardlink", e))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let h = entry.header();
                let (kind, dev) = match etype {
                    EntryType::Fifo => (libc::S_IFIFO, 0),
                    _ => {
                        let major = h.device_major().ok().flatten().unwrap_or(0);
                        let minor = h.device_minor().ok().flatten().unwrap_or(0);
                        let kind = if etype == EntryType::Char { libc::S_IFCHR } else { libc::S_IFBLK };
                        (kind, libc::makedev(major, minor))
                    }
                };
                pdir.mknod(&name, kind | (meta.mode & 0o777), dev).map_err(|e| io("mknod", e))?;
                pdir.lchown(&name, meta.uid, meta.gid).map_err(|e| io("lchown", e))?;
                pdir.chmod(&name, meta.mode).map_err(|e| io("chmod", e))?;
                for (k, v) in &meta.xattrs {
                    pdir.set_xattr(&name, k, v).map_err(|e| io(&format!("setting xattr {}", k.to_string_lossy()), e))?;
                }
                pdir.set_mtime(&name, meta.mtime.0, meta.mtime.1).map_err(|e| io("setting mtime", e))?;
            }
            other => {
                return Err(self.err(shown, format!("unsupported tar entry type {}", type_name(other))));
            }
        }
        self.stats.bytes += content_bytes;
        Ok(())
    }

    /// Directory mtimes, after everything below them was written. A directory a later entry
    /// replaced or deleted is skipped.
    fn finish_dirs(&mut self) -> Result<()> {
        for (node, (secs, ns)) in self.dirs.iter().rev() {
            let path = self.tree.path(*node);
            match open_dir(&self.root, &path, false, |_| {}) {
                Ok(d) => d.set_mtime_self(*secs, *ns).map_err(|e| {
                    self.io_err(&path.iter().collect::<PathBuf>(), "setting directory mtime", e)
                })?,
                Err(ResolveError::Io(e)) => {
                    return Err(self.io_err(&path.iter().collect::<PathBuf>(), "setting directory mtime", e))
                }
                Err(_) => {}
            }
        }
        Ok(())
    }
}

/// A `.wh.` name is a whiteout: it names one entry of its own directory. Refused: entries
/// below a whiteout (`.wh.x/y`), and whiteouts whose name leads elsewhere through `..`
/// (`a/.wh.b/..`, `x/../.wh.y`), which readers that resolve names differently would apply to
/// different entries. aufs's own `.wh..wh.*` names are not whiteouts.
fn check_whiteout_components(raw: &[u8]) -> std::result::Result<(), String> {
    let comps: Vec<&[u8]> = raw.split(|b| *b == b'/').filter(|c| !c.is_empty() && *c != b".").collect();
    let is_whiteout = |c: &[u8]| c.starts_with(WHITEOUT_PREFIX.as_bytes()) && !c.starts_with(WHITEOUT_META_PREFIX.as_bytes());
    let any_whiteout = comps.iter().any(|c| c.starts_with(WHITEOUT_PREFIX.as_bytes()));
    if let Some(pos) = comps.iter().position(|c| is_whiteout(c)) {
        if pos + 1 < comps.len() {
            return Err("a whiteout ('.wh.' name) cannot hold entries".into());
        }
    }
    if any_whiteout && comps.iter().any(|c| *c == b"..") {
        return Err("a whiteout name may not contain '..'".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_pax_time;

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"1700000000"), Some((1700000000, 0)));
        assert_eq!(parse_pax_time(b"1700000000.5"), Some((1700000000, 500_000_000)));
        assert_eq!(parse_pax_time(b"1700000000.123456789123"), Some((1700000000, 123456789)));
        assert_eq!(parse_pax_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time(b"x"), None);
    }
}
