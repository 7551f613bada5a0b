//! `parallel-append`: N writers in one container append to one file at once, as the writers of
//! a log or a journal do: a fresh file of the container layer (`file_bytes = 0`), or a file
//! that comes with the image (`file_bytes` > 0), where overlay and aufs copy the whole file up
//! on the first append while block-level backends copy nothing but the blocks they change.
//!
//! One repetition: a container holds (probe `hold`) while the executor reads the usage of its
//! fresh layer and drops the caches; then the probe's writer threads, released together, each
//! open the file O_APPEND and append `appends` blocks of `append_bytes`, and the probe times
//! each writer's first append (open included: that is where a copy-up happens) and all the
//! appends together with its own clock. The file's size afterwards must be exactly what was
//! there plus what was appended, else the repetition fails.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::images::{ImageSpec, Shape};
use crate::lab::{Image, Lab, Notes};
use crate::probe::{Op, Request};
use crate::{Better, CellExec, MetricSpec, ParamKind, ParamSpec, Params, Profile, RepSamples, SetupError, TypedParams, Unit, Workload, GIB, KIB, MIB};

/// Parameters of one cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendParams {
    /// 0: a fresh file of the container layer; otherwise the size of the image's file that
    /// the writers append to.
    pub file_bytes: u64,
    /// Writer threads in the container, all on the same file.
    pub writers: u32,
    /// Bytes of one append (one write call).
    pub append_bytes: u64,
    /// Appends per writer.
    pub appends: u64,
    /// Each writer fsyncs before it closes (included in the time).
    pub fsync: bool,
}

impl TypedParams for AppendParams {}

impl AppendParams {
    pub fn appended_bytes(&self) -> u64 {
        self.writers as u64 * self.appends * self.append_bytes
    }
    fn file(&self) -> &'static str {
        if self.file_bytes == 0 {
            NEW_FILE
        } else {
            IMAGE_FILE
        }
    }
    /// What the probe does: hold, append, then report the file's size.
    pub fn request(&self) -> Request {
        Request::new(vec![
            Op::Hold,
            Op::Append {
                path: self.file().into(),
                block_bytes: self.append_bytes,
                count: self.appends,
                writers: self.writers,
                create: self.file_bytes == 0,
                fsync: self.fsync,
            },
            Op::Stat { paths: vec![self.file().into()], open: false },
        ])
    }
}

/// The image's file (`file_bytes` > 0).
pub const IMAGE_FILE: &str = "/data/append";
/// The fresh file (`file_bytes` = 0).
pub const NEW_FILE: &str = "/var/tmp/cowbench-append";

pub const METRICS: [MetricSpec; 4] = [
    MetricSpec { name: "append_total_ns", unit: Unit::Nanoseconds, better: Better::Lower, description: "all writers' appends, first writer's open to last writer's close, timed inside the container" },
    MetricSpec { name: "append_throughput_bytes_per_s", unit: Unit::BytesPerSecond, better: Better::Higher, description: "bytes all writers appended over append_total_ns" },
    MetricSpec { name: "first_append_latency_ns", unit: Unit::Nanoseconds, better: Better::Lower, description: "one writer's open + first append (where overlay and aufs copy an image file up), one sample per writer" },
    MetricSpec { name: "usage_delta_bytes", unit: Unit::Bytes, better: Better::Lower, description: "bytes of the container layer after the appends minus before (driver usage)" },
];

/// The parameters of a cell (`cowbench run --set parallel-append.NAME=…`).
pub const PARAMS: [ParamSpec; 5] = [
    ParamSpec { name: "file_bytes", kind: ParamKind::Bytes, description: "0: a fresh file; else the size of the image file appended to" },
    ParamSpec { name: "writers", kind: ParamKind::Count, description: "writer threads in the container, all on the same file" },
    ParamSpec { name: "append_bytes", kind: ParamKind::Bytes, description: "bytes of one append" },
    ParamSpec { name: "appends", kind: ParamKind::Count, description: "appends per writer" },
    ParamSpec { name: "fsync", kind: ParamKind::Bool, description: "each writer fsyncs before it closes" },
];

pub struct ParallelAppend;

impl Workload for ParallelAppend {
    fn id(&self) -> &'static str {
        "parallel-append"
    }
    fn description(&self) -> &'static str {
        "N writers in one container appending to a fresh file and to a large image file"
    }
    fn claims(&self) -> &'static [&'static str] {
        &[]
    }
    fn metrics(&self) -> &'static [MetricSpec] {
        &METRICS
    }
    fn params(&self) -> &'static [ParamSpec] {
        &PARAMS
    }
    fn check_params(&self, p: &Params) -> Result<(), String> {
        AppendParams::from_params(p).map(drop)
    }
    fn cells(&self, profile: Profile) -> Vec<Params> {
        let (files, writers, sizes, fsyncs): (&[u64], &[u32], &[u64], &[bool]) = match profile {
            // 1 MiB per writer, buffered: the copy-up and the writers' contention, not the disk.
            Profile::Quick => (&[0, 64 * MIB], &[1, 4], &[4 * KIB], &[false]),
            Profile::Full => (&[0, 64 * MIB, GIB], &[1, 4, 16], &[512, 64 * KIB], &[false, true]),
        };
        let mut v = Vec::new();
        for &file_bytes in files {
            for &writers in writers {
                for &append_bytes in sizes {
                    for &fsync in fsyncs {
                        let appends = MIB / append_bytes;
                        v.push(AppendParams { file_bytes, writers, append_bytes, appends, fsync }.to_params());
                    }
                }
            }
        }
        v
    }
    fn warmup(&self, _profile: Profile) -> u32 {
        1
    }
    fn repetitions(&self, profile: Profile) -> u32 {
        match profile {
            Profile::Quick => 5,
            Profile::Full => 15,
        }
    }
    fn drop_caches(&self) -> bool {
        // A copy-up reads the image file: cold is the case of a container's first append.
        true
    }
    fn setup<'a>(&self, lab: &'a dyn Lab, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
        let p: AppendParams = crate::kit::params(self.id(), params)?;
        let spec = match p.file_bytes {
            0 => ImageSpec::new("append-base", lab.seed(), Shape::Base),
            b => ImageSpec::new(&format!("append-b{b}"), lab.seed(), Shape::LargeFile { path: IMAGE_FILE.into(), bytes: b }),
        };
        Ok(Box::new(Appends { lab, p, img: lab.image(&spec)? }))
    }
}

struct Appends<'a> {
    lab: &'a dyn Lab,
    p: AppendParams,
    img: Image,
}

impl CellExec for Appends<'_> {
    fn repetition(&mut self, _rep: u32) -> anyhow::Result<RepSamples> {
        let name = self.lab.driver_name();
        let spec = crate::lab::ContainerSpec { stop_timeout: Some(Duration::from_secs(600)), ..crate::lab::ContainerSpec::probe(&self.p.request()) };
        // The usage walk and the container's start (vfs copies the image) must not leave the
        // file in the cache.
        let cold = || self.lab.drop_caches().map_err(|e| anyhow::anyhow!("{name}: {e}"));
        crate::kit::layer_usage_around_stop(self.lab, &self.img, spec, cold, |resp, cold| {
            cold?;
            let size = resp.samples_of("stat", "stat").next().and_then(|s| s.values.get("size_bytes").copied());
            let want = self.p.file_bytes + self.p.appended_bytes();
            if size != Some(want) {
                anyhow::bail!("{name}: {} is {size:?} bytes after the appends, not {want}: appends were lost or misplaced", self.p.file());
            }
            let total = resp.samples_of("append", "total").next().ok_or_else(|| anyhow::anyhow!("{name}: no append/total sample"))?;
            let mut v: RepSamples = vec![
                ("append_total_ns", total.latency_ns as f64),
                ("append_throughput_bytes_per_s", total.bytes as f64 * 1e9 / total.latency_ns.max(1) as f64),
            ];
            v.extend(resp.samples_of("append", "first").map(|s| ("first_append_latency_ns", s.latency_ns as f64)));
            Ok(v)
        })
    }

    fn notes(&self) -> Notes {
        BTreeMap::from([
            ("image".into(), self.img.name.clone()),
            ("file".into(), self.p.file().into()),
            ("appends".into(), "O_APPEND, one descriptor per writer thread, all writers on one file".into()),
            ("timed_in".into(), "container (probe CLOCK_MONOTONIC)".into()),
        ])
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_and_requests() {
        let q: Vec<AppendParams> = ParallelAppend.cells(Profile::Quick).iter().map(|c| AppendParams::from_params(c).unwrap()).collect();
        assert_eq!(q.len(), 4);
        assert_eq!(q.iter().map(|p| (p.file_bytes, p.writers)).collect::<Vec<_>>(), [(0, 1), (0, 4), (64 * MIB, 1), (64 * MIB, 4)]);
        assert!(q.iter().all(|p| p.appends * p.append_bytes == MIB && !p.fsync));
        assert_eq!(
            crate::params_string(&ParallelAppend.cells(Profile::Quick)[1]),
            "append_bytes=4096;appends=256;file_bytes=0;fsync=false;writers=4"
        );
        assert_eq!(ParallelAppend.cells(Profile::Full).len(), 3 * 3 * 2 * 2);

        // A fresh file is created by the appends; the image's file must already be there.
        let r = q[1].request();
        assert_eq!(r.ops[0], Op::Hold);
        assert_eq!(r.ops[1], Op::Append { path: NEW_FILE.into(), block_bytes: 4096, count: 256, writers: 4, create: true, fsync: false });
        assert!(matches!(q[3].request().ops[1], Op::Append { ref path, create: false, .. } if path == IMAGE_FILE));
        assert_eq!(q[3].appended_bytes(), 4 * MIB);
        r.validate().unwrap();
    }
}
