//! Reading files of an image (`docker save` tarball or OCI layout, as a directory or a tar)
//! without ever leaving it.
//!
//! Every name an image gives is a [`BlobPath`]: relative, no `..`. In a directory each
//! component is opened with `openat(O_NOFOLLOW)` below the directory's own descriptor, so a
//! symlink anywhere on the way (`blobs` → `/`, a blob → `/etc/shadow`) is refused instead of
//! followed, and only regular files are read. In a tar, names are looked up in the archive's
//! own index; symlink and hardlink entries resolve inside the archive only.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

use super::{Error, Result};

/// A path inside an image: relative, normalised, without `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobPath(Vec<String>);

impl BlobPath {
    pub fn parse(text: &str) -> std::result::Result<BlobPath, String> {
        if text.starts_with('/') {
            return Err(format!("{text:?} is an absolute path; image files are named relative to the image"));
        }
        if text.contains('\0') {
            return Err(format!("{text:?} contains a NUL byte"));
        }
        let mut parts = Vec::new();
        for c in text.split('/') {
            match c {
                "" | "." => {}
                ".." => return Err(format!("{text:?} contains '..'; image files are named inside the image")),
                c => parts.push(c.to_string()),
            }
        }
        if parts.is_empty() {
            return Err(format!("{text:?} names no file"));
        }
        Ok(BlobPath(parts))
    }

    fn key(&self) -> String {
        self.0.join("/")
    }
}

impl std::fmt::Display for BlobPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key())
    }
}

/// Where the files of an image come from.
pub enum Source {
    Dir { path: PathBuf, dir: File },
    Tar { file: PathBuf, entries: HashMap<String, TarEntry> },
}

#[derive(Clone)]
pub enum TarEntry {
    File { offset: u64, size: u64 },
    /// Target, as a normalised name inside the archive.
    Link(String),
}

/// Normalise a name inside the archive; `None` when `..` climbs above its root.
fn normalize_in_archive(p: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

impl Source {
    pub fn open_path(path: &Path, image: &str) -> Result<Source> {
        let meta = std::fs::metadata(path).map_err(Error::io(image, format!("open {}", path.display())))?;
        if meta.is_dir() {
            let dir = File::open(path).map_err(Error::io(image, format!("open {}", path.display())))?;
            return Ok(Source::Dir { path: path.to_path_buf(), dir });
        }
        let f = File::open(path).map_err(Error::io(image, format!("open {}", path.display())))?;
        let mut ar = tar::Archive::new(f);
        let mut entries = HashMap::new();
        let fmt = |m: String| Error::Format { image: image.into(), message: m };
        for e in ar.entries().map_err(|e| fmt(format!("{} is not a tar archive: {e}", path.display())))? {
            let e = e.map_err(|e| fmt(format!("{}: bad tar entry (a compressed tarball must be uncompressed first): {e}", path.display())))?;
            let raw = e.path().map_err(|e| fmt(e.to_string()))?.to_string_lossy().into_owned();
            // An entry named above the archive's root is no file of the image.
            let Some(name) = normalize_in_archive(&raw) else { continue };
            let link = || e.link_name().ok().flatten().map(|t| t.to_string_lossy().into_owned()).unwrap_or_default();
            let entry = match e.header().entry_type() {
                tar::EntryType::Symlink => {
                    let target = link();
                    if target.starts_with('/') {
                        continue;
                    }
                    let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    match normalize_in_archive(&format!("{dir}/{target}")) {
                        Some(t) => TarEntry::Link(t),
                        None => continue,
                    }
                }
                tar::EntryType::Link => match normalize_in_archive(&link()) {
                    Some(t) => TarEntry::Link(t),
                    None => continue,
                },
                t if t.is_file() => TarEntry::File { offset: e.raw_file_position(), size: e.size() },
                _ => continue,
            };
            entries.insert(name, entry);
        }
        Ok(Source::Tar { file: path.to_path_buf(), entries })
    }

    /// Whether `name` is there at all: a symlink or a directory in its place counts, so that
    /// reading it reports why it is refused instead of "not found".
    pub fn exists(&self, name: &BlobPath) -> bool {
        match self.open(name) {
            Ok(_) => true,
            Err(e) => e.kind() != io::ErrorKind::NotFound,
        }
    }

    /// Open `name` for reading; its size comes along.
    pub fn open(&self, name: &BlobPath) -> io::Result<(Box<dyn Read + '_>, u64)> {
        match self {
            Source::Dir { path, dir } => {
                let refused = |c: &str, e: nix::Error| -> io::Error {
                    let why = match e {
                        nix::Error::ELOOP | nix::Error::ENOTDIR => format!("{c} is a symlink or not a directory; image files must be regular files inside the image"),
                        e => e.desc().to_string(),
                    };
                    io::Error::new(io::Error::from(e).kind(), format!("{name} in {}: {why}", path.display()))
                };
                let (last, dirs) = name.0.split_last().expect("a BlobPath has a component");
                let mut cur: Option<File> = None;
                for c in dirs {
                    let at = cur.as_ref().unwrap_or(dir).as_raw_fd();
                    let fd = openat(Some(at), c.as_str(), OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
                        .map_err(|e| refused(c, e))?;
                    // SAFETY: openat returned a new descriptor that nothing else owns.
                    cur = Some(unsafe { File::from_raw_fd(fd) });
                }
                let at = cur.as_ref().unwrap_or(dir).as_raw_fd();
                // O_NONBLOCK: opening a FIFO planted as a blob must not hang; it has no
                // effect on the regular files that are read.
                let fd = openat(Some(at), last.as_str(), OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC, Mode::empty())
                    .map_err(|e| refused(last, e))?;
                // SAFETY: as above.
                let f = unsafe { File::from_raw_fd(fd) };
                let meta = f.metadata()?;
                if !meta.is_file() {
                    return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name} in {} is not a regular file", path.display())));
                }
                Ok((Box::new(io::BufReader::with_capacity(1 << 20, f)), meta.len()))
            }
            Source::Tar { file, entries } => {
                let mut n = name.key();
                for _ in 0..16 {
                    match entries.get(&n) {
                        Some(TarEntry::File { offset, size }) => {
                            let mut f = File::open(file)?;
                            f.seek(SeekFrom::Start(*offset))?;
                            return Ok((Box::new(io::BufReader::with_capacity(1 << 20, f.take(*size))), *size));
                        }
                        Some(TarEntry::Link(t)) => n = t.clone(),
                        None => break,
                    }
                }
                Err(io::Error::new(io::ErrorKind::NotFound, format!("{name} not in {}", file.display())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_paths_stay_inside() {
        assert_eq!(BlobPath::parse("./a//b/c").unwrap().to_string(), "a/b/c");
        for bad in ["/etc/passwd", "a/../../b", "..", "", "./", "a\0b"] {
            assert!(BlobPath::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(normalize_in_archive("a/./b/../c").as_deref(), Some("a/c"));
        assert_eq!(normalize_in_archive("a/../../c"), None);
    }
}
