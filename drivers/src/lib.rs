//! cowbench-drivers: container storage backends behind one snapshotter trait.
//!
//! - [`Driver`]: containerd-snapshotter semantics (prepare, view, commit, mount, remove,
//!   apply, diff, changes, usage, list, status, capabilities).
//! - [`backend::Backend`]: the storage work of one backend; [`snapshotter::Snapshotter`]
//!   implements `Driver` once over any backend (metadata, mount ledger, busy checks).
//! - [`archive`]: OCI layer tars in and out, whiteouts converted to each backend's native form,
//!   safe against hostile entries.
//! - one module per backend; [`registry`] probes and opens them by name.
//! - [`conformance`]: the one test suite every backend must pass.

pub mod archive;
pub mod backend;
pub mod conformance;
pub mod driver;
pub mod error;
pub mod extents;
pub mod ledger;
pub mod meta;
pub mod registry;
pub mod rollback;
pub mod snapshotter;
pub mod status;
pub mod sys;

pub mod aufs;
pub mod btrfs;
pub mod devicemapper;
pub mod overlay;
pub mod vfs;
pub mod zfs;

pub use driver::{
    ApplyStats, Capabilities, Change, ChangeKind, Driver, DriverConfig, Implementation, Kind, Labels, LayerInfo,
    MountGuard, ProbeReport, Usage,
};
pub use status::{Backing, BackingKind, CacheSource, CacheUsage, PoolUsage, SpaceSource, SpaceUsage, Status};
pub use error::{Error, IoContext, Result};
pub use extents::{ExtentMethod, FileExtents};
