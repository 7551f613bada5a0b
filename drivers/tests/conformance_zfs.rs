//! The conformance suite on the `zfs` backend (the OpenZFS module where present, else zfs-fuse).

cowbench_drivers::conformance_tests!("zfs");
