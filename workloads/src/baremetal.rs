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
//! - btrfs, zfs: the driver's own filesystem, through an empty layer (a btrfs subvolume or zfs
//!   dataset without parent, i.e. the loop-backed btrfs or the pool itself), mounted on the host.

use serde::{Deserialize, Serialize};

use crate::seqio::{full_cells, quick_cells, repetitions, IoParams, METRICS};
use crate::{MetricSpec, ParamKind, ParamSpec, Params, Profile, TypedParams, Workload};

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

/// The parameters of a cell: seqio's ([`crate::seqio::PARAMS`]), plus where it ran.
pub const PARAMS: [ParamSpec; crate::seqio::PARAMS.len() + 1] = {
    let mut all = [SITE; crate::seqio::PARAMS.len() + 1];
    let mut i = 0;
    while i < crate::seqio::PARAMS.len() {
        all[i] = crate::seqio::PARAMS[i];
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
        crate::seqio::derive_ios(p);
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
