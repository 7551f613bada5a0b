//! Resolving tar entry names inside a layer without ever leaving it.
//!
//! Names are normalised lexically (never by asking the filesystem): `.` and empty components
//! are dropped, `..` removes the previous component and is refused when there is none left.
//! Absolute names are refused (containerd instead re-roots them; cowbench treats a layer tar
//! with absolute names as hostile, as no OCI tool produces them). The parent directory is then
//! reached from the layer root one component at a time with `O_NOFOLLOW`, so a symlink in the
//! layer (even one pointing inside it) is never walked through.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use super::fsutil::{self, Dir};

/// A normalised entry name: the components below the layer root (empty: the root itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(pub Vec<OsString>);

impl RelPath {
    pub fn to_path(&self) -> PathBuf {
        self.0.iter().collect()
    }
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
    pub fn name(&self) -> &std::ffi::OsStr {
        self.0.last().map(|s| s.as_os_str()).unwrap_or_default()
    }
    pub fn parent(&self) -> RelPath {
        RelPath(self.0[..self.0.len().saturating_sub(1)].to_vec())
    }
    pub fn join(&self, name: &std::ffi::OsStr) -> RelPath {
        let mut v = self.0.clone();
        v.push(name.to_os_string());
        RelPath(v)
    }
}

/// Normalise a raw tar name. The error text says why the name was refused.
pub fn normalize(raw: &[u8]) -> Result<RelPath, String> {
    if raw.contains(&0) {
        return Err("name contains a NUL byte".into());
    }
    if raw.first() == Some(&b'/') {
        return Err("absolute path refused: layer entries must be relative to the layer root".into());
    }
    let mut out: Vec<OsString> = Vec::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err("'..' leads outside the layer root".into());
                }
            }
            c => out.push(OsString::from_vec(c.to_vec())),
        }
    }
    Ok(RelPath(out))
}

/// Why a parent directory could not be reached.
#[derive(Debug)]
pub enum ResolveError {
    /// A component is a symlink (`at` names it): refused, never followed.
    Symlink { at: PathBuf },
    /// A component exists and is neither a directory nor a symlink.
    NotDir { at: PathBuf },
    /// A component is missing and `create` was false.
    Missing { at: PathBuf },
    Io(io::Error),
}

impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResolveError::Symlink { at } => {
                write!(f, "{at:?} is a symlink in the layer; cowbench never writes through a symlinked directory")
            }
            ResolveError::NotDir { at } => write!(f, "{at:?} exists and is not a directory"),
            ResolveError::Missing { at } => write!(f, "{at:?} does not exist in the layer"),
            ResolveError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for ResolveError {
    fn from(e: io::Error) -> Self {
        ResolveError::Io(e)
    }
}

/// Open directory `comps` (all of them) below `root`, component by component without following
/// symlinks. With `create`, missing directories are made (mode 0755, as tar implementations do
/// for parents a tar does not list); `on_create` is told each one.
pub fn open_dir<C: AsRef<std::ffi::OsStr>>(
    root: &Dir,
    comps: &[C],
    create: bool,
    mut on_create: impl FnMut(&[C]),
) -> Result<Dir, ResolveError> {
    let mut cur = root.try_clone()?;
    for (i, c) in comps.iter().enumerate() {
        let c = c.as_ref();
        let at = || comps[..=i].iter().map(AsRef::as_ref).collect::<PathBuf>();
        let next = match cur.open_dir(c) {
            Ok(d) => d,
            Err(e) => match e.raw_os_error() {
                Some(libc::ENOENT) if create => {
                    cur.mkdir(c, 0o755)?;
                    on_create(&comps[..=i]);
                    cur.open_dir(c)?
                }
                Some(libc::ENOENT) => return Err(ResolveError::Missing { at: at() }),
                Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
                    let st = cur.stat(c)?;
                    return Err(match st {
                        Some(st) if fsutil::file_type(&st) == libc::S_IFLNK => ResolveError::Symlink { at: at() },
                        _ => ResolveError::NotDir { at: at() },
                    });
                }
                _ => return Err(e.into()),
            },
        };
        cur = next;
    }
    Ok(cur)
}

/// Display form of raw tar name bytes.
pub fn display_name(raw: &[u8]) -> PathBuf {
    PathBuf::from(std::ffi::OsStr::from_bytes(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Result<PathBuf, String> {
        normalize(s.as_bytes()).map(|r| r.to_path())
    }

    #[test]
    fn normalises_lexically() {
        assert_eq!(n("./a/b/").unwrap(), PathBuf::from("a/b"));
        assert_eq!(n("a//./b").unwrap(), PathBuf::from("a/b"));
        assert_eq!(n("a/../b").unwrap(), PathBuf::from("b"));
        assert_eq!(n("./").unwrap(), PathBuf::new());
    }

    #[test]
    fn refuses_escapes_and_absolute() {
        assert!(n("../x").is_err());
        assert!(n("a/../../x").is_err());
        assert!(n("a/b/../../../x").is_err());
        assert!(n("/etc/passwd").is_err());
        assert!(normalize(b"a\0b").is_err());
    }
}
