//! What the backends share: loop devices, mounts, host facts, whole-tree operations (copy,
//! usage, bind mounts), external commands, and the size parser and units every backend and
//! the harness use.
//! Each is a thin, documented layer over `nix`/`libc` so backends stay about storage logic.

pub mod child;
pub mod cmd;
pub mod daemon;
pub mod hostinfo;
pub mod loopdev;
pub mod pagecache;
pub mod mounts;
pub mod tree;
pub mod units;
