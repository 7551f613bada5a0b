//! Executor of `concurrent`: M containers start and hold (probe `hold`, then in the same
//! request the container's IO operations, then a second `hold`); with all M up the harness
//! drops the page cache and sends SIGTERM to every container's init at once (kill(2) on the
//! host pids), which ends the first holds and starts the IO everywhere; then it stops each
//! container (its SIGTERM ends the second hold, at once if it came during the IO) and takes
//! its probe response.
//!
//! A container's IO runs from the end of its first hold (`started_ns` + its latency) to the
//! start of the second (`finished_ns` − its latency), CLOCK_MONOTONIC inside the container,
//! which is the host's one clock (runc gives containers no time namespace): completion per
//! container, and from the first release to the last end for all M.

use std::collections::BTreeMap;
use std::time::Duration;

use cowbench_workloads::concurrent::{ConcurrentParams, Mode, BLOCK, SMALL_FILE};
use cowbench_workloads::probe::{Op, Request, Response};
use cowbench_workloads::{Params, TypedParams};
use rand::{Rng, SeedableRng};

use super::exec::{CellExec, RepSamples, Session, SetupError};
use super::fragmentation::{large_file_image, LARGE_PATH};
use super::inside::check;
use crate::container::{Container, ContainerSpec};
use crate::image::{Image, ImageSpec, Shape};

/// Files per directory of the small-file image.
const PER_DIR: usize = 256;

pub fn setup<'a>(s: &'a Session, params: &Params) -> Result<Box<dyn CellExec + 'a>, SetupError> {
    let p = ConcurrentParams::from_params(params).map_err(|e| SetupError::Fail(anyhow::anyhow!(e)))?;
    if p.containers == 0 || p.ios == 0 {
        return Err(SetupError::Fail(anyhow::anyhow!("concurrent needs containers > 0 and ios > 0")));
    }
    let (img, files) = match p.mode {
        Mode::Read | Mode::Update => (large_file_image(s, p.data_bytes)?, 0),
        Mode::FileRead | Mode::FileUpdate => {
            let count = (p.data_bytes / SMALL_FILE).max(1) as usize;
            let spec = ImageSpec::new(
                &format!("smallfiles-{count}x{SMALL_FILE}"),
                s.seed,
                Shape::SmallFiles { count, bytes: SMALL_FILE, per_dir: PER_DIR },
            );
            (super::inside::session_image(s, &spec)?, count)
        }
    };
    Ok(Box::new(Concurrent { s, p, img, files }))
}

struct Concurrent<'a> {
    s: &'a Session,
    p: ConcurrentParams,
    img: Image,
    /// Files of the small-file image (0 for the single-file modes).
    files: usize,
}

impl Concurrent<'_> {
    /// The IO operations of container `i` in repetition `rep`.
    fn io_ops(&self, rep: u32, i: u32) -> Vec<Op> {
        let seed = ((rep as u64) << 32) | i as u64;
        let p = &self.p;
        match p.mode {
            Mode::Read | Mode::Update => vec![Op::RandomIo {
                path: LARGE_PATH.into(),
                block_bytes: BLOCK,
                count: p.ios,
                write: p.mode == Mode::Update,
                direct: false,
                // Tarasov's updates are synchronous: each reaches the device before the next.
                dsync: p.mode == Mode::Update,
                fsync: false,
                interval_us: p.interval_us,
                per_block: true,
                seed,
            }],
            Mode::FileRead | Mode::FileUpdate => {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.s.seed ^ seed);
                let mut ops = Vec::new();
                for _ in 0..p.ios {
                    let f = rng.gen_range(0..self.files);
                    let path = format!("/small/d{}/f{f}", f / PER_DIR);
                    ops.push(if p.mode == Mode::FileRead {
                        Op::Read { path, block_bytes: SMALL_FILE, direct: false, random: false, count: None, per_block: false, seed: 0 }
                    } else {
                        Op::Write {
                            path,
                            block_bytes: SMALL_FILE,
                            bytes: SMALL_FILE,
                            direct: false,
                            random: false,
                            fsync: true,
                            create: false,
                            per_block: false,
                            seed: 0,
                        }
                    });
                    if p.interval_us >= 1000 {
                        ops.push(Op::Sleep { ms: p.interval_us / 1000 });
                    }
                }
                ops
            }
        }
    }
}

/// (IO start, IO end, summed IO latency, IOs) of one container's response.
fn io_window(resp: &Response) -> anyhow::Result<(u64, u64, u64, u64)> {
    check(resp)?;
    let holds: Vec<_> = resp.samples_of("hold", "total").collect();
    if holds.len() != 2 {
        anyhow::bail!("expected 2 hold samples, got {}", holds.len());
    }
    let start = resp.started_ns + holds[0].latency_ns;
    let end = resp.finished_ns.saturating_sub(holds[1].latency_ns);
    let (mut lat, mut n) = (0u64, 0u64);
    for s in &resp.samples {
        let io = match (s.op.as_str(), s.phase.as_str()) {
            ("random_io", "block") => true,
            ("read" | "write", "total") => true,
            _ => false,
        };
        if io {
            lat += s.latency_ns;
            n += 1;
        }
    }
    Ok((start, end, lat, n))
}

impl CellExec for Concurrent<'_> {
    fn repetition(&mut self, rep: u32) -> anyhow::Result<RepSamples> {
        let d = &*self.s.driver;
        // Generous: the paced full profile keeps a container busy for ios × interval.
        let busy = Duration::from_micros(self.p.ios * self.p.interval_us);
        let mut held: Vec<Container<'_>> = Vec::with_capacity(self.p.containers as usize);
        let result = (|| -> anyhow::Result<RepSamples> {
            for i in 0..self.p.containers {
                // The trailing hold keeps the container alive until `stop` (whose SIGTERM may
                // come while the IO still runs: blocked, it ends that hold at once).
                let mut ops = vec![Op::Hold];
                ops.extend(self.io_ops(rep, i));
                ops.push(Op::Hold);
                let spec = ContainerSpec {
                    stop_timeout: Some(Duration::from_secs(600) + busy * 2),
                    ..ContainerSpec::probe(&Request::new(ops))
                };
                let c = self.s.runtime.start(d, &self.img, &spec)?;
                c.wait_ready(Duration::from_secs(60))?;
                held.push(c);
            }
            super::drop_caches().map_err(|e| anyhow::anyhow!(e))?;
            for c in &held {
                // SAFETY: kill(2) on the container's init, a process of ours that is alive (it
                // is holding); SIGTERM ends its hold, which waits for exactly this.
                if unsafe { libc::kill(c.pid(), libc::SIGTERM) } != 0 {
                    anyhow::bail!("container {}: kill(SIGTERM): {}", c.id(), std::io::Error::last_os_error());
                }
            }
            Ok(Vec::new())
        })();
        let mut windows = Vec::new();
        let mut err = result.err();
        for c in held {
            match c.stop() {
                Ok(out) if err.is_none() => match out.probe_response().map_err(anyhow::Error::from).and_then(|r| io_window(&r)) {
                    Ok(w) => windows.push(w),
                    Err(e) => err = Some(e.context(format!("container {}", out.id))),
                },
                Ok(_) => {}
                Err(e) => {
                    err.get_or_insert(e.into());
                }
            }
        }
        if let Some(e) = err {
            return Err(e);
        }
        let mut samples: RepSamples = Vec::new();
        let mut ios = 0;
        for &(start, end, lat, n) in &windows {
            samples.push(("completion_ns", end.saturating_sub(start) as f64));
            samples.push(("mean_io_latency_ns", lat as f64 / n.max(1) as f64));
            ios += n;
        }
        let first = windows.iter().map(|w| w.0).min().unwrap_or(0);
        let last = windows.iter().map(|w| w.1).max().unwrap_or(0);
        let total = last.saturating_sub(first);
        samples.push(("total_completion_ns", total as f64));
        samples.push(("aggregate_ios_per_s", ios as f64 / (total.max(1) as f64 / 1e9)));
        Ok(samples)
    }

    fn notes(&self) -> BTreeMap<String, String> {
        let what = match self.p.mode {
            Mode::Read => format!("random {BLOCK}-byte preads of {LARGE_PATH}"),
            Mode::Update => format!("random {BLOCK}-byte O_DSYNC pwrites of {LARGE_PATH} (first one copies up on file-level backends)"),
            Mode::FileRead => format!("whole-file reads of random {SMALL_FILE}-byte files of {}", self.files),
            Mode::FileUpdate => format!("fsynced whole-file overwrites of random {SMALL_FILE}-byte files of {}", self.files),
        };
        BTreeMap::from([
            ("image".into(), self.img.name.clone()),
            ("io".into(), what),
            ("release".into(), "SIGTERM to every container's init at once after dropping caches".into()),
            ("timed_in".into(), "containers (probe CLOCK_MONOTONIC, the host's clock)".into()),
        ])
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        Ok(())
    }
}
