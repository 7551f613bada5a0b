//! The conformance suite on the `overlay` backend (kernel overlayfs).

cowbench_drivers::conformance_tests!("overlay");
