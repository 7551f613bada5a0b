//! Executor of `baremetal`: the probe requests of `seqio`/`randio` (see [`super::seqio::io_ops`]),
//! run by the same static probe binary as a plain host process on the backing filesystem of the
//! session's driver (see `cowbench_workloads::baremetal` for which filesystem that is). Where a
//! container's request holds, the host runs the part before the hold as one probe process,
//! drops the caches, and runs the rest as a second one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use cowbench_drivers::MountGuard;
use cowbench_workloads::baremetal::BaremetalParams;
use cowbench_workloads::probe::{Op, Request, Response};
use cowbench_workloads::seqio::{IoParams, Target};
use cowbench_workloads::{Params, TypedParams};

use super::exec::{CellExec, RepSamples, Session, SetupError};
use super::imgs::Pattern;
use super::seqio::{io_ops, io_samples, o_direct_refused, total, IoOps};
use crate::image::probe_bin;

/// Where the host-side IO goes for `s`'s driver, and how that was chosen.
struct Site<'a> {
    dir: PathBuf,
    what: String,
    /// The empty layer mounted for btrfs/zfs (unmounted and removed in `finish`).
    layer: Option<(String, MountGuard<'a>)>,
}

fn site<'a>(s: &'a Session) -> anyhow::Result<Site<'a>> {
    let base = s.cfg.root.join("baremetal").join(&s.name);
    std::fs::create_dir_all(&base)?;
    match s.driver.capabilities().native_fs_layer {
        true => {
            // The driver's own filesystem without image or container: a parentless layer
            // (a plain subvolume / dataset of the loop-backed store).
            let key = format!("baremetal-{}", std::process::id());
            if s.driver.stat(&key).is_ok() {
                s.driver.remove(&key)?;
            }
            s.driver.prepare(&key, None, &Default::default())?;
            let mnt = base.join("mnt");
            std::fs::create_dir_all(&mnt)?;
            let g = match MountGuard::new(&*s.driver, &key, &mnt) {
                Ok(g) => g,
                Err(e) => {
                    let _ = s.driver.remove(&key);
                    return Err(e.into());
                }
            };
            let fs = cowbench_drivers::sys::mounts::fstype_of(&mnt).map(|m| m.fstype).unwrap_or_else(|_| "?".into());
            Ok(Site { dir: mnt, what: format!("a parentless {} layer mounted on the host ({fs})", s.name), layer: Some((key, g)) })
        }
        false => {
            let fs = cowbench_drivers::sys::mounts::fstype_of(&base).map(|m| format!("{} {}", m.fstype, m.source)).unwrap_or_else(|_| "?".into());
            Ok(Site { dir: base, what: format!("a directory on the cowbench root's filesystem ({fs})"), layer: None })
        }
    }
}

pub fn setup<'a>(s: &'a Session, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
    let p = BaremetalParams::from_params(params).map_err(|e| SetupError::Fail(anyhow::anyhow!(e)))?;
    if p.io.direct {
        // The same skip as the container cells, so a pair is either measured on both sides or neither.
        if let Some(why) = o_direct_refused(s)? {
            return Err(SetupError::Skip(why));
        }
    }
    let probe = probe_bin::find_or_build().map_err(anyhow::Error::from)?;
    let site = site(s)?;
    let mut b = Baremetal { s, p: p.io, probe, site: Some(site), files: Vec::new() };
    if p.io.target == Target::Image {
        // The counterpart of the image's file: written and synced before any repetition.
        for j in 0..p.io.jobs {
            let f = b.file(j);
            let written = (|| -> std::io::Result<()> {
                let mut w = std::fs::File::create(&f)?;
                std::io::copy(&mut Pattern::new(s.seed, j as u64, p.io.file_bytes), &mut w)?;
                w.sync_all()
            })();
            if let Err(e) = written {
                let _ = Box::new(b).finish();
                return Err(SetupError::Fail(anyhow::anyhow!("write {}: {e}", f.display())));
            }
        }
    }
    Ok(Box::new(b))
}

struct Baremetal<'a> {
    s: &'a Session,
    p: IoParams,
    probe: PathBuf,
    site: Option<Site<'a>>,
    files: Vec<PathBuf>,
}

impl Baremetal<'_> {
    fn dir(&self) -> &Path {
        &self.site.as_ref().expect("site until finish").dir
    }
    fn file(&mut self, job: u32) -> PathBuf {
        let f = self.dir().join(format!("io-{job}"));
        if !self.files.contains(&f) {
            self.files.push(f.clone());
        }
        f
    }
    fn spawn(&self, ops: &[Op]) -> anyhow::Result<Child> {
        Ok(Command::new(&self.probe)
            .arg(Request::new(ops.to_vec()).to_json())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?)
    }
}

fn wait(c: Child) -> anyhow::Result<Response> {
    let out = c.wait_with_output()?;
    if !out.status.success() {
        anyhow::bail!("host probe exited with {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Response::from_json(&String::from_utf8_lossy(&out.stdout)).map_err(|e| anyhow::anyhow!(e))
}

impl CellExec for Baremetal<'_> {
    fn repetition(&mut self, rep: u32) -> anyhow::Result<RepSamples> {
        let mut plans: Vec<IoOps> = Vec::new();
        for j in 0..self.p.jobs {
            let f = self.file(j);
            plans.push(io_ops(&self.p, f.to_str().unwrap_or_default(), self.s.seed ^ ((rep as u64) << 32) ^ j as u64));
        }
        // Part before the hold (new files), all jobs at once.
        let mut first: Vec<Option<Response>> = Vec::new();
        let pre: Vec<Option<Child>> = plans
            .iter()
            .map(|o| if o.hold > 0 { self.spawn(&o.ops[..o.hold]).map(Some) } else { Ok(None) })
            .collect::<anyhow::Result<_>>()?;
        for c in pre {
            first.push(match c {
                Some(c) => Some(wait(c)?),
                None => None,
            });
        }
        super::drop_caches().map_err(|e| anyhow::anyhow!(e))?;
        let post: Vec<Child> = plans.iter().map(|o| self.spawn(&o.ops[o.hold + 1..])).collect::<anyhow::Result<_>>()?;
        let mut jobs = Vec::new();
        for ((c, o), pre) in post.into_iter().zip(&plans).zip(first) {
            let second = wait(c)?;
            // Indices in the second process are shifted by the part before the hold.
            let shift = o.hold + 1;
            let get = |i: usize| -> anyhow::Result<cowbench_workloads::probe::Sample> {
                let (r, at) = if i < o.hold {
                    (pre.as_ref().ok_or_else(|| anyhow::anyhow!("no response of the part before the hold"))?, i)
                } else {
                    (&second, i - shift)
                };
                Ok(total(r, at, "host probe")?.clone())
            };
            jobs.push((get(o.read)?, get(o.write)?));
        }
        Ok(io_samples(&self.p, &jobs))
    }

    fn notes(&self) -> BTreeMap<String, String> {
        let mut n = BTreeMap::from([
            ("site".into(), self.site.as_ref().map(|s| s.what.clone()).unwrap_or_default()),
            ("dir".into(), self.site.as_ref().map(|s| s.dir.display().to_string()).unwrap_or_default()),
            ("timed_in".into(), "host process (probe CLOCK_MONOTONIC), open to close, fsync included".into()),
            ("pairs_with".into(), "seqio/randio cells of this driver with the same parameters".into()),
        ]);
        if self.p.direct {
            n.insert("o_direct".into(), super::seqio::o_direct_note(self.s));
        }
        n
    }

    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        if let Some(site) = self.site.take() {
            if let Some((key, g)) = site.layer {
                g.unmount()?;
                self.s.driver.remove(&key)?;
            }
        }
        let _ = std::fs::remove_dir_all(self.s.cfg.root.join("baremetal").join(&self.s.name));
        // Only when no other driver's directory is left in it.
        let _ = std::fs::remove_dir(self.s.cfg.root.join("baremetal"));
        Ok(())
    }
}
