//! `seqio`: sequential reads and writes of 128 KiB blocks, in a container, on a file of the
//! image (`target = image`: reads come from the image layers, the first write goes through the
//! backend's copy-on-write) and on a new file of the container layer (`target = new`), buffered
//! and with O_DIRECT, with and without a final fsync. `randio` is the same with random 4 KiB
//! blocks; `baremetal` runs both on the host. The parameter types they share live in
//! [`crate::fileio`].
//!
//! One repetition per job: a container holds (probe `hold`) until every job is up and the
//! harness has dropped the caches, then the probe reads and writes and times both with its own
//! clock (open to close, fsync included). For `target = new` the probe first writes the file
//! (the timed sequential write of seqio; for randio an unrecorded fill), holds while the
//! harness drops the caches, then reads it. Throughput is bytes over the probe's time; with
//! several jobs, the sum of bytes over the slowest job's time.
//!
//! O_DIRECT: a backend that refuses it (open fails with EINVAL) has its direct cells skipped
//! with that reason. On loop-backed storage (btrfs, zfs here) O_DIRECT reaches the loop device,
//! which may serve it from the host page cache: such cells are marked `loop_backed` and the
//! note says so. Answers dm-io-intensive and (with `baremetal`) near-bare-metal.


use crate::{MetricSpec, ParamSpec, Params, Profile, TypedParams, Workload};

pub use crate::fileio::{derive_ios, full_cells, quick_cells, repetitions, IoParams, Pattern, Target, IMAGE_FILE, NEW_FILE, METRICS, PARAMS, QUICK_FILE, RAND_IOS_QUICK};

pub struct Seqio;

impl Workload for Seqio {
    fn id(&self) -> &'static str {
        "seqio"
    }
    fn description(&self) -> &'static str {
        "sequential 128 KiB reads and writes on an image file and a new file, buffered and O_DIRECT"
    }
    fn claims(&self) -> &'static [&'static str] {
        &["near-bare-metal", "dm-io-intensive"]
    }
    fn metrics(&self) -> &'static [MetricSpec] {
        &METRICS
    }
    fn params(&self) -> &'static [ParamSpec] {
        &PARAMS
    }
    fn check_params(&self, p: &Params) -> Result<(), String> {
        IoParams::from_params(p).map(drop)
    }
    fn derive_params(&self, p: &mut Params) {
        derive_ios(p);
    }
    fn cells(&self, profile: Profile) -> Vec<Params> {
        let c = match profile {
            Profile::Quick => quick_cells(false),
            Profile::Full => full_cells(false),
        };
        c.iter().map(|p| p.to_params()).collect()
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
    fn setup<'a>(&self, lab: &'a dyn crate::lab::Lab, params: &Params) -> Result<Box<dyn crate::CellExec + 'a>, crate::SetupError> {
        crate::fileio::setup_in_container(self.id(), lab, params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MIB;

    #[test]
    fn cells() {
        let q = Seqio.cells(Profile::Quick);
        assert_eq!(q.len(), 3);
        assert_eq!(
            crate::params_string(&q[0]),
            "block_bytes=131072;direct=false;file_bytes=67108864;fsync=false;ios=512;jobs=1;pattern=seq;target=image"
        );
        let p = IoParams::from_params(&q[1]).unwrap();
        assert!(p.direct && p.target == Target::Image && p.ios() == 512);
        assert_eq!(Seqio.cells(Profile::Full).len(), 2 * 3 * 2 * 2 * 2);
        assert_eq!(IoParams::rand(Target::New, false, false, MIB, 1, RAND_IOS_QUICK).ios(), 256);
        assert_eq!(IoParams::rand(Target::New, false, false, QUICK_FILE, 1, RAND_IOS_QUICK).ios(), RAND_IOS_QUICK);
    }
}
