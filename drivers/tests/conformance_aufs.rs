//! The conformance suite on the aufs backend (here: the unionfs-fuse stand-in).
cowbench_drivers::conformance_tests!("aufs");
