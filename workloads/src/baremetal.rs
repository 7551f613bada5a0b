//! `baremetal`: the cells of `seqio` (quick profile; `seqio` and `randio` in the full one), with
//! the same parameters, run by the same probe binary directly on the host — no container, no
//! image, no storage driver in the path — on the backing filesystem of each driver. It is the
//! reference of the near-bare-metal ratio.
//!
//! Pairing: a baremetal cell is recorded under the driver whose backing filesystem it ran on,
//! with exactly the parameters of the seqio/randio cell it is the reference for, plus
//! `site = host`. The claim engine pairs a subject cell with the reference cells of the same
//! driver that agree on every parameter the subject has, so seqio on btrfs with
//! (target=image, direct=false …) is compared with baremetal on btrfs with the same values.
//! `target = image` on the host means a file written (and synced) before the repetition, the
//! counterpart of a file that comes with the image; `target = new` a file the probe creates.
//!
//! Backing filesystem per driver (the storage the driver's data lands on, minus the driver):
//! - overlay, aufs, vfs, devicemapper: a directory on the filesystem of the cowbench root (where
//!   overlay/aufs/vfs keep their layer directories and devicemapper its loop-backed pool files);
//! - btrfs, zfs (`native_fs_layer`): the driver's own filesystem, through an empty layer (a
//!   btrfs subvolume or zfs dataset without parent, i.e. the loop-backed btrfs or the pool
//!   itself), mounted on the host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use cowbench_drivers::sys::mounts::fstype_of;
use cowbench_drivers::MountGuard;
use serde::{Deserialize, Serialize};

use crate::fileio::{self, IoOps};
use crate::images::content::Pattern;
use crate::lab::{Lab, Notes};
use crate::probe::{Op, Request, Response, Sample};
use crate::fileio::{full_cells, quick_cells, repetitions, IoParams, Target, METRICS};
use crate::{CellExec, MetricSpec, ParamKind, ParamSpec, Params, Profile, RepSamples, SetupError, TypedParams, Workload};

/// Where a baremetal cell ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Site {
    Host,
}

/// [`IoParams`] plus the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaremetalParams {
    #[serde(flatten)]
    pub io: IoParams,
    pub site: Site,
}

impl TypedParams for BaremetalParams {}

/// Where a baremetal cell ran.
const SITE: ParamSpec = ParamSpec {
    name: "site",
    kind: ParamKind::Choice(&["host"]),
    description: "where the probe ran: directly on the host",
};

/// The parameters of a cell: seqio's ([`crate::fileio::PARAMS`]), plus where it ran.
pub const PARAMS: [ParamSpec; crate::fileio::PARAMS.len() + 1] = {
    let mut all = [SITE; crate::fileio::PARAMS.len() + 1];
    let mut i = 0;
    while i < crate::fileio::PARAMS.len() {
        all[i] = crate::fileio::PARAMS[i];
        i += 1;
    }
    all
};

pub struct Baremetal;

impl Workload for Baremetal {
    fn id(&self) -> &'static str {
        "baremetal"
    }
    fn description(&self) -> &'static str {
        "the seqio and randio cells run by the probe directly on each driver's backing filesystem"
    }
    fn claims(&self) -> &'static [&'static str] {
        &["near-bare-metal"]
    }
    fn metrics(&self) -> &'static [MetricSpec] {
        &METRICS
    }
    fn params(&self) -> &'static [ParamSpec] {
        &PARAMS
    }
    fn check_params(&self, p: &Params) -> Result<(), String> {
        BaremetalParams::from_params(p).map(drop)
    }
    fn derive_params(&self, p: &mut Params) {
        crate::fileio::derive_ios(p);
    }
    fn cells(&self, profile: Profile) -> Vec<Params> {
        // Quick: the seqio cells (what near-bare-metal compares); full: seqio's and randio's.
        let c = match profile {
            Profile::Quick => quick_cells(false),
            Profile::Full => full_cells(false).into_iter().chain(full_cells(true)).collect(),
        };
        c.into_iter().map(|io| BaremetalParams { io, site: Site::Host }.to_params()).collect()
    }
    fn warmup(&self, _profile: Profile) -> u32 {
        1
    }
    fn repetitions(&self, profile: Profile) -> u32 {
        repetitions(profile)
    }
    fn drop_caches(&self) -> bool {
        true
    }
    fn setup<'a>(&self, lab: &'a dyn Lab, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
        let p: BaremetalParams = crate::kit::params(self.id(), params)?;
        if p.io.direct {
            // The same skip as the container cells, so a pair is either measured on both sides or neither.
            if let Some(why) = fileio::o_direct_refused(lab)? {
                return Err(SetupError::Skip(why));
            }
        }
        let probe = lab.probe_binary()?;
        let site = site(lab)?;
        let mut b = OnHost { lab, p: p.io, probe, site: Some(site), files: Vec::new() };
        if p.io.target == Target::Image {
            // The counterpart of the image's file: written and synced before any repetition.
            for j in 0..p.io.jobs {
                let f = b.file(j);
                let written = (|| -> std::io::Result<()> {
                    let mut w = std::fs::File::create(&f)?;
                    std::io::copy(&mut Pattern::new(lab.seed(), j as u64, p.io.file_bytes), &mut w)?;
                    w.sync_all()
                })();
                if let Err(e) = written {
                    let _ = Box::new(b).finish();
                    return Err(SetupError::Fail(anyhow::anyhow!("{}: write {}: {e}", lab.driver_name(), f.display())));
                }
            }
        }
        Ok(Box::new(b))
    }
}

// The executor: the probe requests of `seqio`/`randio` (see [`fileio::io_ops`]), run by the
// same static probe binary as a plain host process on the backing filesystem of the lab's
// driver. Where a container's request holds, the host runs the part before the hold as one
// probe process, drops the caches, and runs the rest as a second one.

/// Where the host-side IO goes for the lab's driver, and how that was chosen.
struct HostSite<'a> {
    /// The lab's scratch directory of this workload.
    scratch: PathBuf,
    /// Where the files go: the scratch directory, or the layer mounted in it.
    dir: PathBuf,
    what: String,
    /// The empty layer mounted where the backend's layers are filesystems of their own
    /// (unmounted and removed in `finish`).
    layer: Option<(String, MountGuard<'a>)>,
}

fn site(lab: &dyn Lab) -> anyhow::Result<HostSite<'_>> {
    let base = lab.scratch_dir("baremetal")?;
    let name = lab.driver_name();
    if lab.driver().capabilities().native_fs_layer {
        // The driver's own filesystem without image or container: a parentless layer
        // (a plain subvolume / dataset of the loop-backed store).
        let d = lab.driver();
        let key = format!("baremetal-{}", std::process::id());
        if d.stat(&key).is_ok() {
            d.remove(&key)?;
        }
        d.prepare(&key, None, &Default::default())?;
        let mnt = base.join("mnt");
        std::fs::create_dir_all(&mnt)?;
        let g = match MountGuard::new(d, &key, &mnt) {
            Ok(g) => g,
            Err(e) => {
                let _ = d.remove(&key);
                return Err(e.into());
            }
        };
        let fs = fstype_of(&mnt).map(|m| m.fstype).unwrap_or_else(|_| "?".into());
        Ok(HostSite { scratch: base, dir: mnt, what: format!("a parentless {name} layer mounted on the host ({fs})"), layer: Some((key, g)) })
    } else {
        let fs = fstype_of(&base).map(|m| format!("{} {}", m.fstype, m.source)).unwrap_or_else(|_| "?".into());
        Ok(HostSite { scratch: base.clone(), dir: base, what: format!("a directory on the cowbench root's filesystem ({fs})"), layer: None })
    }
}

struct OnHost<'a> {
    lab: &'a dyn Lab,
    p: IoParams,
    probe: PathBuf,
    site: Option<HostSite<'a>>,
    files: Vec<PathBuf>,
}

impl OnHost<'_> {
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
        Command::new(&self.probe)
            .arg(Request::new(ops.to_vec()).to_json())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| anyhow::anyhow!("{}: start host probe {}: {e}", self.lab.driver_name(), self.probe.display()))
    }
}

fn wait(c: Child) -> anyhow::Result<Response> {
    let out = c.wait_with_output()?;
    if !out.status.success() {
        anyhow::bail!("host probe exited with {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Response::from_json(&String::from_utf8_lossy(&out.stdout)).map_err(|e| anyhow::anyhow!(e))
}

impl CellExec for OnHost<'_> {
    fn repetition(&mut self, rep: u32) -> anyhow::Result<RepSamples> {
        let mut plans: Vec<IoOps> = Vec::new();
        for j in 0..self.p.jobs {
            let f = self.file(j);
            plans.push(fileio::io_ops(&self.p, f.to_str().unwrap_or_default(), fileio::job_seed(self.lab.seed(), rep, j)));
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
        self.lab.drop_caches().map_err(|e| anyhow::anyhow!("{}: {e}", self.lab.driver_name()))?;
        let post: Vec<Child> = plans.iter().map(|o| self.spawn(&o.ops[o.hold + 1..])).collect::<anyhow::Result<_>>()?;
        let mut jobs = Vec::new();
        for ((c, o), pre) in post.into_iter().zip(&plans).zip(first) {
            let second = wait(c)?;
            // Indices in the second process are shifted by the part before the hold.
            let shift = o.hold + 1;
            let get = |i: usize| -> anyhow::Result<Sample> {
                let (r, at) = if i < o.hold {
                    (pre.as_ref().ok_or_else(|| anyhow::anyhow!("no response of the part before the hold"))?, i)
                } else {
                    (&second, i - shift)
                };
                Ok(fileio::total(r, at, "host probe")?.clone())
            };
            jobs.push((get(o.read)?, get(o.write)?));
        }
        Ok(fileio::io_samples(&self.p, &jobs))
    }

    fn notes(&self) -> Notes {
        let mut n = BTreeMap::from([
            ("site".into(), self.site.as_ref().map(|s| s.what.clone()).unwrap_or_default()),
            ("dir".into(), self.site.as_ref().map(|s| s.dir.display().to_string()).unwrap_or_default()),
            ("timed_in".into(), "host process (probe CLOCK_MONOTONIC), open to close, fsync included".into()),
            ("pairs_with".into(), "seqio/randio cells of this driver with the same parameters".into()),
        ]);
        if self.p.direct {
            n.insert("o_direct".into(), fileio::o_direct_note(self.lab));
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
                self.lab.driver().remove(&key)?;
                let _ = std::fs::remove_dir(&site.dir);
            }
            // Nothing of the cell is left on the host (the lab would remove it at the end of
            // the run; a long run should not carry it until then).
            let _ = std::fs::remove_dir(&site.scratch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seqio::Seqio;

    #[test]
    fn mirrors_seqio_and_randio() {
        let b = Baremetal.cells(Profile::Quick);
        assert_eq!(b.len(), 3);
        // Every seqio cell has a baremetal cell agreeing on all of its parameters.
        for s in Seqio.cells(Profile::Quick) {
            assert!(b.iter().any(|r| s.iter().all(|(k, v)| r.get(k) == Some(v))), "{s:?}");
        }
        let p = BaremetalParams::from_params(&b[0]).unwrap();
        assert_eq!(p.site, Site::Host);
        assert_eq!(b[0].get("site"), Some(&serde_json::json!("host")));
    }
}
