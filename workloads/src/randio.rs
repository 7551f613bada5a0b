//! `randio`: random 4 KiB reads and writes in a container, on a file of the image and on a new
//! file, buffered and O_DIRECT, with and without fsync. Same procedure, parameters
//! ([`crate::fileio::IoParams`]) and metrics as `seqio` (see there); a pass does as many IOs as
//! the file has blocks, at random offsets (fio's randread/randwrite with size = file).
//! Answers dm-io-intensive and near-bare-metal.

use crate::fileio::{full_cells, quick_cells, repetitions, IoParams, METRICS, PARAMS};
use crate::{MetricSpec, ParamSpec, Params, Profile, TypedParams, Workload};

pub struct Randio;

impl Workload for Randio {
    fn id(&self) -> &'static str {
        "randio"
    }
    fn description(&self) -> &'static str {
        "random 4 KiB reads and writes on an image file and a new file, buffered and O_DIRECT"
    }
    fn claims(&self) -> &'static [&'static str] {
        &["dm-io-intensive", "near-bare-metal"]
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
        crate::fileio::derive_ios(p);
    }
    fn cells(&self, profile: Profile) -> Vec<Params> {
        let c = match profile {
            Profile::Quick => quick_cells(true),
            Profile::Full => full_cells(true),
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
    use crate::fileio::Pattern;

    #[test]
    fn cells_are_random_4k() {
        for c in Randio.cells(Profile::Quick) {
            let p = IoParams::from_params(&c).unwrap();
            assert_eq!((p.pattern, p.block_bytes), (Pattern::Rand, 4096));
        }
    }
}
