//! The conformance suite on the `vfs` backend (full copy per layer).

cowbench_drivers::conformance_tests!("vfs");
