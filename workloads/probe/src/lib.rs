//! The in-container probe's wire format, shared by the probe binary (`cowbench-probe`, which
//! runs inside every cowbench container) and the harness (which builds requests and parses
//! responses with these very structs).
//!
//! A [`Request`] lists operations; the probe performs them in order, times each with
//! `CLOCK_MONOTONIC` inside the container (so runtime start-up and pipe latency are never part
//! of an operation's figure) and prints one [`Response`] as JSON on stdout. A failing operation
//! is reported in its sample (`error`: errno and message) and the probe goes on; the exit code
//! is 0 unless the request itself cannot be parsed (then 2, with the reason on stderr).
//!
//! Host-side operations (dropping caches, reading cgroup accounting) are not here: the
//! container cannot and should not do them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod meta;
pub mod ops;
pub mod random_io;

/// Path of the probe inside every cowbench image.
pub const PROBE_PATH: &str = "/usr/local/bin/cowbench-probe";

/// Version of the request/response format. A response carries it so the harness can refuse a
/// probe binary older than itself. 2: the `resident` and `copy` operations.
pub const PROTOCOL_VERSION: u32 = 2;

/// Line the probe writes to stderr when it starts to hold (the `hold` operation), so the
/// harness can tell a container that is up from one still starting.
pub const HOLD_MARKER: &str = "cowbench-probe: holding";

/// What the probe is asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub ops: Vec<Op>,
}

impl Request {
    pub fn new(ops: Vec<Op>) -> Self {
        Request { ops }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("request serialises")
    }

    pub fn from_json(s: &str) -> Result<Self, String> {
        let r: Request = serde_json::from_str(s).map_err(|e| format!("invalid probe request: {e}"))?;
        r.validate()?;
        Ok(r)
    }

    /// Reject requests no operation could run (zero block sizes ...), before doing anything.
    pub fn validate(&self) -> Result<(), String> {
        for (i, op) in self.ops.iter().enumerate() {
            match op {
                Op::Read { block_bytes, .. } | Op::Write { block_bytes, .. } if *block_bytes == 0 => {
                    return Err(format!("op {i}: block_bytes must be > 0"));
                }
                Op::Stat { paths, .. } if paths.is_empty() => return Err(format!("op {i}: stat needs paths")),
                Op::Copy { block_bytes, .. } if *block_bytes == 0 => return Err(format!("op {i}: copy needs block_bytes > 0")),
                Op::Append { block_bytes, writers, .. } if *block_bytes == 0 || *writers == 0 => {
                    return Err(format!("op {i}: append needs block_bytes > 0 and writers > 0"));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// One operation. JSON: `{"op": "copyup", "path": "/data/f", "offset": 0, "bytes": 4096}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// Stay alive until SIGTERM (or SIGINT), then go on with the next operation. Used for
    /// density: many containers held at once while the harness reads their accounting.
    Hold,
    /// First write to a file of a lower layer: open O_WRONLY (timed: this is where overlay and
    /// aufs copy the whole file up), pwrite `bytes` at `offset` (timed), optional fsync
    /// (timed), close. One sample per phase.
    Copyup {
        path: String,
        #[serde(default)]
        offset: u64,
        bytes: u64,
        #[serde(default)]
        fsync: bool,
    },
    /// How much of a file is in the page cache, without reading it: open O_RDONLY, mmap it
    /// read-only, `mincore`, unmap, close. One sample (`resident`) with `resident_bytes` and
    /// `size_bytes`. Checks that a timing about to start is cold; its open does walk the path,
    /// so the path's dentries and inode are warm afterwards (its data is not).
    Resident { path: String },
    /// A plain copy: open `src` O_RDONLY and `dst` O_WRONLY|O_CREAT|O_TRUNC, read/write in
    /// blocks of `block_bytes`, optional fsync of `dst`, close both. One `total` sample, first
    /// open to last close: the cost of moving the bytes, to compare a copy-up with.
    Copy {
        src: String,
        dst: String,
        block_bytes: u64,
        #[serde(default)]
        fsync: bool,
    },
    /// stat (and, with `open`, open O_RDONLY + close) every path. One sample per path.
    Stat {
        paths: Vec<String>,
        #[serde(default)]
        open: bool,
    },
    /// Read `count` blocks (None: the whole file once, sequentially) of `block_bytes`.
    Read {
        path: String,
        block_bytes: u64,
        #[serde(default)]
        direct: bool,
        #[serde(default)]
        random: bool,
        #[serde(default)]
        count: Option<u64>,
        /// One sample per block as well as the total.
        #[serde(default)]
        per_block: bool,
        #[serde(default)]
        seed: u64,
    },
    /// Write `bytes` in blocks of `block_bytes`.
    Write {
        path: String,
        block_bytes: u64,
        bytes: u64,
        #[serde(default)]
        direct: bool,
        #[serde(default)]
        random: bool,
        #[serde(default)]
        fsync: bool,
        /// Create (and truncate) the file; otherwise it must exist.
        #[serde(default)]
        create: bool,
        #[serde(default)]
        per_block: bool,
        #[serde(default)]
        seed: u64,
    },
    /// Memory figures of the probe process from /proc/self/status (VmRSS, RssFile ...), bytes.
    Meminfo,
    /// Sleep (e.g. to let the harness sample accounting between two operations).
    Sleep { ms: u64 },
    /// `count` reads (or, with `write`, overwrites) of `block_bytes` at random block-aligned
    /// offsets across the whole existing file, never extending it; `dsync` opens it O_DSYNC,
    /// `fsync` syncs once at the end, `interval_us` paces IO starts (see [`random_io`]).
    RandomIo {
        path: String,
        block_bytes: u64,
        count: u64,
        #[serde(default)]
        write: bool,
        #[serde(default)]
        direct: bool,
        #[serde(default)]
        dsync: bool,
        #[serde(default)]
        fsync: bool,
        #[serde(default)]
        interval_us: u64,
        #[serde(default)]
        per_block: bool,
        #[serde(default)]
        seed: u64,
    },
    /// `count` small files of `bytes` in `dir`: create, stat, rename, chmod, unlink, one
    /// sample per phase (see [`meta::meta`]).
    Meta { dir: String, count: u64, bytes: u64 },
    /// Recursive lchown of `path` (copies every file up on file-level backends); one sample.
    Chown { path: String, uid: u32, gid: u32 },
    /// `writers` threads append to one file at once: each opens `path` O_WRONLY|O_APPEND
    /// (with `create`, O_CREAT too), writes `count` blocks of `block_bytes`, optionally
    /// fsyncs, closes. Samples: `first` per writer (its open + first write: where overlay and
    /// aufs copy an image file up) and one `total` (first writer's start to last writer's end,
    /// bytes of all writers). See [`ops::append`].
    Append {
        path: String,
        block_bytes: u64,
        count: u64,
        writers: u32,
        #[serde(default)]
        create: bool,
        #[serde(default)]
        fsync: bool,
    },
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Hold => "hold",
            Op::Copyup { .. } => "copyup",
            Op::Resident { .. } => "resident",
            Op::Copy { .. } => "copy",
            Op::Stat { .. } => "stat",
            Op::Read { .. } => "read",
            Op::Write { .. } => "write",
            Op::Meminfo => "meminfo",
            Op::Sleep { .. } => "sleep",
            Op::RandomIo { .. } => "random_io",
            Op::Meta { .. } => "meta",
            Op::Chown { .. } => "chown",
            Op::Append { .. } => "append",
        }
    }
}

/// A failed system call, as the probe saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpError {
    pub errno: Option<i32>,
    pub message: String,
}

impl From<std::io::Error> for OpError {
    fn from(e: std::io::Error) -> Self {
        OpError { errno: e.raw_os_error(), message: e.to_string() }
    }
}

/// One timed measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Operation name (`copyup`, `read` ...).
    pub op: String,
    /// Index of the operation in the request.
    pub index: usize,
    /// Part of the operation: `open`, `pwrite`, `fsync`, `stat`, `block`, `total`.
    pub phase: String,
    /// CLOCK_MONOTONIC time the phase took, inside the container.
    pub latency_ns: u64,
    /// Bytes read or written in the phase.
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Further figures, unit in the name (`vm_rss_bytes` ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<OpError>,
}

impl Sample {
    pub fn new(op: &str, index: usize, phase: &str) -> Self {
        Sample {
            op: op.into(),
            index,
            phase: phase.into(),
            latency_ns: 0,
            bytes: 0,
            path: None,
            values: BTreeMap::new(),
            error: None,
        }
    }
}

/// What the probe prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub protocol_version: u32,
    pub probe_version: String,
    /// The probe's pid as seen inside the container (1 when it is the container's init).
    pub pid: u32,
    pub hostname: String,
    pub samples: Vec<Sample>,
    /// Operations that failed (their samples carry the error).
    pub errors: u64,
    /// CLOCK_MONOTONIC at start and end of the whole request, ns.
    pub started_ns: u64,
    pub finished_ns: u64,
}

impl Response {
    pub fn from_json(s: &str) -> Result<Self, String> {
        serde_json::from_str(s.trim()).map_err(|e| format!("invalid probe response: {e}"))
    }

    /// Samples of one operation name and phase.
    pub fn samples_of<'a>(&'a self, op: &'a str, phase: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.op == op && s.phase == phase)
    }

    /// The first error of any sample.
    pub fn first_error(&self) -> Option<(&Sample, &OpError)> {
        self.samples.iter().find_map(|s| s.error.as_ref().map(|e| (s, e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_ops() -> Vec<Op> {
        vec![
            Op::Hold,
            Op::Copyup { path: "/a".into(), offset: 7, bytes: 4096, fsync: true },
            Op::Stat { paths: vec!["/a".into(), "/b".into()], open: true },
            Op::Read { path: "/a".into(), block_bytes: 4096, direct: true, random: true, count: Some(3), per_block: true, seed: 9 },
            Op::Write { path: "/w".into(), block_bytes: 512, bytes: 4096, direct: false, random: false, fsync: true, create: true, per_block: false, seed: 1 },
            Op::Meminfo,
            Op::Sleep { ms: 5 },
            Op::Append { path: "/l".into(), block_bytes: 4096, count: 8, writers: 4, create: true, fsync: false },
            Op::Resident { path: "/a".into() },
            Op::Copy { src: "/a".into(), dst: "/b".into(), block_bytes: 1 << 20, fsync: true },
        ]
    }

    #[test]
    fn request_round_trip() {
        let r = Request::new(all_ops());
        let back = Request::from_json(&r.to_json()).unwrap();
        assert_eq!(r, back);
    }

    #[test]
    fn request_wire_format() {
        let r = Request::from_json(r#"{"ops":[{"op":"copyup","path":"/f","bytes":1},{"op":"hold"}]}"#).unwrap();
        assert_eq!(r.ops[0], Op::Copyup { path: "/f".into(), offset: 0, bytes: 1, fsync: false });
        assert_eq!(r.ops[1], Op::Hold);
        assert!(Request::from_json(r#"{"ops":[{"op":"fly"}]}"#).is_err());
        assert!(Request::from_json(r#"{"ops":[{"op":"read","path":"/f","block_bytes":0}]}"#).is_err());
        assert!(Request::from_json(r#"{"ops":[{"op":"append","path":"/f","block_bytes":1,"count":1,"writers":0}]}"#).is_err());
        assert!(Request::from_json(r#"{"ops":[{"op":"copy","src":"/a","dst":"/b","block_bytes":0}]}"#).is_err());
        let r = Request::from_json(r#"{"ops":[{"op":"resident","path":"/f"}]}"#).unwrap();
        assert_eq!(r.ops[0], Op::Resident { path: "/f".into() });
    }

    #[test]
    fn response_round_trip() {
        let mut s = Sample::new("copyup", 1, "open");
        s.latency_ns = 12;
        s.bytes = 3;
        s.path = Some("/a".into());
        s.values.insert("vm_rss_bytes".into(), 4096);
        s.error = Some(OpError { errno: Some(2), message: "No such file".into() });
        let r = Response {
            protocol_version: PROTOCOL_VERSION,
            probe_version: "x".into(),
            pid: 1,
            hostname: "h".into(),
            samples: vec![s, Sample::new("hold", 0, "total")],
            errors: 1,
            started_ns: 1,
            finished_ns: 2,
        };
        let back = Response::from_json(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(r, back);
        assert_eq!(back.samples_of("copyup", "open").count(), 1);
        assert_eq!(back.first_error().unwrap().1.errno, Some(2));
    }
}
