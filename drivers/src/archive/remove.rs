//! Removing a directory tree with a bounded number of open descriptors, whatever its depth.
//!
//! `std::fs::remove_dir_all` keeps one descriptor open per level (and recurses on the stack),
//! so a layer a few thousand directories deep can be created but not removed (EMFILE). Here
//! the walk holds one descriptor for the directory it is in: it goes down with
//! `openat(O_NOFOLLOW)` and back up through `..`, checking that `..` is the directory it came
//! from (device and inode). If it is not (the tree was moved meanwhile), the directory is
//! reopened by name from the top of the walk, so nothing outside the tree is ever removed.
//! Memory is the names on the current path plus the not yet removed subdirectories of the
//! directories on it.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::Path;

use super::fsutil::{self, Dir};

type Id = (u64, u64);

fn id_of(d: &Dir) -> io::Result<Id> {
    let st = d.stat_self()?;
    Ok((st.st_dev, st.st_ino))
}

/// Remove `path` and, when it is a directory, everything below it, never following a symlink
/// (a symlink is unlinked itself). Like `std::fs::remove_dir_all`, a missing `path` is a
/// `NotFound` error; unlike it, open descriptors do not grow with the depth of the tree.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("cannot remove {}", path.display())))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let pdir = Dir::open_following(parent)?;
    if pdir.stat(name)?.is_none() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} does not exist", path.display())));
    }
    remove_all_at(&pdir, name)
}

/// Remove `name` inside `parent` and everything below it; a missing `name` is not an error.
pub(super) fn remove_all_at(parent: &Dir, name: &OsStr) -> io::Result<()> {
    match parent.stat(name)? {
        None => return Ok(()),
        Some(st) if !fsutil::is_dir(&st) => return parent.unlink(name),
        Some(_) => {}
    }
    let mut walk = Walk { top: parent, cur: parent.try_clone()?, names: Vec::new(), ids: Vec::new(), pending: Vec::new() };
    walk.enter(name.to_os_string())?;
    while let Some(level) = walk.pending.last_mut() {
        match level.pop() {
            Some(sub) => walk.enter(sub)?,
            None => walk.leave()?,
        }
    }
    Ok(())
}

struct Walk<'a> {
    top: &'a Dir,
    /// The directory the walk is in.
    cur: Dir,
    /// Names from `top` down to `cur`, and the identity of each of those directories.
    names: Vec<OsString>,
    ids: Vec<Id>,
    /// Per level: subdirectories still to remove.
    pending: Vec<Vec<OsString>>,
}

impl Walk<'_> {
    /// Go down into `name`, unlink everything in it but subdirectories, and list those.
    fn enter(&mut self, name: OsString) -> io::Result<()> {
        let d = match self.cur.open_dir(&name) {
            Ok(d) => d,
            // Replaced by a non-directory since it was listed.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR) | Some(libc::ELOOP)) => return self.cur.unlink(&name),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.ids.push(id_of(&d)?);
        self.names.push(name);
        self.cur = d;
        let mut subdirs = Vec::new();
        for n in self.cur.names()? {
            match self.cur.stat(&n)? {
                Some(st) if fsutil::is_dir(&st) => subdirs.push(n),
                Some(_) => self.cur.unlink(&n)?,
                None => {}
            }
        }
        self.pending.push(subdirs);
        Ok(())
    }

    /// The current directory is empty: go up and remove it.
    fn leave(&mut self) -> io::Result<()> {
        self.pending.pop();
        let name = self.names.pop().expect("inside the tree");
        self.ids.pop();
        self.cur = self.parent()?;
        self.cur.rmdir(&name)
    }

    /// The directory above `cur` (whose path from `top` is now `names`).
    fn parent(&self) -> io::Result<Dir> {
        let Some(want) = self.ids.last() else { return self.top.try_clone() };
        if let Ok(up) = self.cur.open_dir(OsStr::new("..")) {
            if id_of(&up).ok().as_ref() == Some(want) {
                return Ok(up);
            }
        }
        let mut d = self.top.try_clone()?;
        for (n, want) in self.names.iter().zip(&self.ids) {
            d = d.open_dir(n)?;
            if id_of(&d)? != *want {
                return Err(io::Error::other(format!("directory {} was replaced while it was being removed", n.to_string_lossy())));
            }
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_files_dirs_and_symlinks_but_not_symlink_targets() {
        let t = tempfile::tempdir().unwrap();
        let keep = t.path().join("keep");
        std::fs::create_dir(&keep).unwrap();
        std::fs::write(keep.join("f"), b"x").unwrap();
        let r = t.path().join("tree");
        std::fs::create_dir_all(r.join("a/b/c")).unwrap();
        std::fs::create_dir_all(r.join("a/d")).unwrap();
        std::fs::write(r.join("a/b/c/f"), b"x").unwrap();
        std::fs::write(r.join("a/g"), b"x").unwrap();
        std::os::unix::fs::symlink(&keep, r.join("a/b/link")).unwrap();
        remove_tree(&r).unwrap();
        assert!(!r.exists());
        assert!(keep.join("f").exists());
        assert_eq!(remove_tree(&r).unwrap_err().kind(), io::ErrorKind::NotFound);
        std::os::unix::fs::symlink(&keep, &r).unwrap();
        remove_tree(&r).unwrap();
        assert!(keep.join("f").exists());
    }
}
