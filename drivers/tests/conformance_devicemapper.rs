//! The conformance suite on the devicemapper backend (dm-thin; run inside scripts/vm where the
//! host kernel has no device-mapper). A 1G base keeps each fresh pool's mkfs small.
cowbench_drivers::conformance_tests!("devicemapper", "base_size" => "1G");
