//! The conformance suite on the `btrfs` backend (subvolumes on a loop-backed btrfs).

cowbench_drivers::conformance_tests!("btrfs");
