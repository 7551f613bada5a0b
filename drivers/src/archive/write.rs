//! Exporting a change set as an uncompressed OCI layer tar.
//!
//! GNU headers (long names and link targets as GNU `L`/`K` records, which Go's archive/tar
//! and tar-rs both read) plus PAX records for what GNU headers cannot carry: xattrs as
//! `SCHILY.xattr.<name>` and mtimes with nanoseconds. Deletions become empty `.wh.<name>`
//! files, opaque directories get a `.wh..wh..opq` entry right after themselves, and files that
//! share an inode inside the diff become tar hardlinks to the first of them.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::changes::{CollectError, Item};
use super::fsutil;
use super::{OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::driver::ChangeKind;

struct Counting<'a> {
    inner: &'a mut dyn Write,
    n: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn err(path: &Path, what: &str, source: io::Error) -> CollectError {
    CollectError { path: path.to_path_buf(), what: what.into(), source }
}

fn empty_file_header() -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_size(0);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn marker_path(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(std::ffi::OsStr::from_bytes(name))
}

/// Write `items` (sorted by path) as a tar. `root` is the layer's tree (upper dir, branch or
/// full tree): parent directories of each change that are not changes themselves are written
/// too, with their metadata from `root`, as containerd's change writer does. Without them,
/// applying a child would leave the parent with a new mtime.
pub fn write(items: &[Item], root: &Path, out: &mut dyn Write) -> Result<u64, CollectError> {
    let mut b = tar::Builder::new(Counting { inner: out, n: 0 });
    let mut inodes: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut dirs_written: HashSet<PathBuf> = HashSet::new();
    for it in items {
        let mut missing = Vec::new();
        let mut anc = it.path.parent();
        while let Some(a) = anc {
            if a.as_os_str().is_empty() || dirs_written.contains(a) {
                break;
            }
            missing.push(a.to_path_buf());
            anc = a.parent();
        }
        for a in missing.into_iter().rev() {
            let parent_item = Item {
                kind: ChangeKind::Modified,
                path: a.clone(),
                source: Some(root.join(&a)),
                opaque: false,
                covered: false,
            };
            append_entry(&mut b, &parent_item, &mut inodes)?;
            dirs_written.insert(a);
        }
        if it.kind != ChangeKind::Deleted {
            dirs_written.insert(it.path.clone());
        }
        append_entry(&mut b, it, &mut inodes)?;
    }
    b.finish().map_err(|e| err(Path::new(""), "finishing tar", e))?;
    let c = b.into_inner().map_err(|e| err(Path::new(""), "finishing tar", e))?;
    Ok(c.n)
}

fn append_entry(
    b: &mut tar::Builder<Counting<'_>>,
    it: &Item,
    inodes: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), CollectError> {
    {
        let io_at = |what: &'static str| move |e: io::Error| err(&it.path, what, e);
        match it.kind {
            ChangeKind::Deleted => {
                if it.covered {
                    return Ok(());
                }
                let parent = it.path.parent().unwrap_or(Path::new(""));
                let mut name = OsString::from(WHITEOUT_PREFIX);
                name.push(it.path.file_name().unwrap_or_default());
                let mut h = empty_file_header();
                b.append_data(&mut h, parent.join(name), io::empty()).map_err(io_at("writing whiteout"))?;
            }
            ChangeKind::Added | ChangeKind::Modified => {
                let src = it.source.as_ref().expect("added/modified entries have a source");
                let st = match fsutil::lstat(src).map_err(io_at("lstat"))? {
                    Some(st) => st,
                    None => return Err(err(&it.path, "lstat", io::ErrorKind::NotFound.into())),
                };
                let ft = fsutil::file_type(&st);
                if ft == libc::S_IFSOCK {
                    // Sockets belong to running processes, not to images (containerd skips
                    // them as well).
                    return Ok(());
                }
                let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
                if st.st_mtime_nsec != 0 {
                    pax.push(("mtime".into(), format!("{}.{:09}", st.st_mtime, st.st_mtime_nsec).into_bytes()));
                }
                for (k, v) in fsutil::xattrs(src).map_err(io_at("reading xattrs"))? {
                    if fsutil::is_overlay_xattr(&k) {
                        continue;
                    }
                    let Ok(k) = k.into_string() else {
                        // PAX keys are UTF-8; such names do not occur in practice.
                        continue;
                    };
                    pax.push((format!("SCHILY.xattr.{k}"), v));
                }
                let mut h = Header::new_gnu();
                h.set_mode(st.st_mode & 0o7777);
                h.set_uid(st.st_uid as u64);
                h.set_gid(st.st_gid as u64);
                h.set_mtime(st.st_mtime.max(0) as u64);
                h.set_size(0);
                let hardlink_to = if ft == libc::S_IFREG && st.st_nlink > 1 {
                    let key = (st.st_dev, st.st_ino);
                    match inodes.get(&key) {
                        Some(first) => Some(first.clone()),
                        None => {
                            inodes.insert(key, it.path.clone());
                            None
                        }
                    }
                } else {
                    None
                };
                if let Some(first) = hardlink_to {
                    h.set_entry_type(EntryType::Link);
                    b.append_link(&mut h, &it.path, &first).map_err(io_at("writing hardlink"))?;
                    return Ok(());
                }
                if !pax.is_empty() {
                    b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                        .map_err(io_at("writing PAX header"))?;
                }
                match ft {
                    libc::S_IFDIR => {
                        h.set_entry_type(EntryType::Directory);
                        let mut p = it.path.clone().into_os_string().into_vec();
                        p.push(b'/');
                        b.append_data(&mut h, PathBuf::from(OsString::from_vec(p)), io::empty())
                            .map_err(io_at("writing directory"))?;
                        if it.opaque {
                            let mut m = empty_file_header();
                            b.append_data(&mut m, marker_path(&it.path, OPAQUE_MARKER.as_bytes()), io::empty())
                                .map_err(io_at("writing opaque marker"))?;
                        }
                    }
                    libc::S_IFREG => {
                        let f = std::fs::OpenOptions::new()
                            .read(true)
                            .custom_flags_nofollow()
                            .open(src)
                            .map_err(io_at("opening file"))?;
                        let size = st.st_size as u64;
                        h.set_entry_type(EntryType::Regular);
                        h.set_size(size);
                        // Exactly `size` bytes even if the file changes while it is read, so the
                        // archive stays well-formed.
                        let data = f.take(size).chain(io::repeat(0)).take(size);
                        b.append_data(&mut h, &it.path, data).map_err(io_at("writing file"))?;
                    }
                    libc::S_IFLNK => {
                        let target = std::fs::read_link(src).map_err(io_at("readlink"))?;
                        h.set_entry_type(EntryType::Symlink);
                        b.append_link(&mut h, &it.path, &target).map_err(io_at("writing symlink"))?;
                    }
                    libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
                        h.set_entry_type(match ft {
                            libc::S_IFCHR => EntryType::Char,
                            libc::S_IFBLK => EntryType::Block,
                            _ => EntryType::Fifo,
                        });
                        if ft != libc::S_IFIFO {
                            h.set_device_major(libc::major(st.st_rdev)).map_err(io_at("device number"))?;
                            h.set_device_minor(libc::minor(st.st_rdev)).map_err(io_at("device number"))?;
                        }
                        b.append_data(&mut h, &it.path, io::empty()).map_err(io_at("writing device"))?;
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for std::fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOFOLLOW)
    }
}
