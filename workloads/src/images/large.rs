//! The image with one large file that `sharedcache`, `fragmentation` and `concurrent` read.
//! One spec for all three, so a run builds it once per driver and size (the reuse of
//! [`crate::lab::Lab::image`] compares specs) and no workload imports another for it.

use super::{ImageSpec, Shape};

/// Where the large file sits in the image.
pub const LARGE_PATH: &str = "/data/large";

/// The image `largefile-<bytes>`: the base layer and one layer holding a file of `bytes` at
/// [`LARGE_PATH`], its content derived from `seed`.
pub fn large_file(seed: u64, bytes: u64) -> ImageSpec {
    ImageSpec::new(&format!("largefile-{bytes}"), seed, Shape::LargeFile { path: LARGE_PATH.into(), bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spec_per_size_and_seed() {
        let a = large_file(7, 64 << 20);
        assert_eq!(a.name, "largefile-67108864");
        assert_eq!(a.shape, Shape::LargeFile { path: "/data/large".into(), bytes: 64 << 20 });
        // Equal specs are what lets a second workload reuse the image.
        assert_eq!(a, large_file(7, 64 << 20));
        assert_ne!(a, large_file(8, 64 << 20));
        assert_ne!(a.name, large_file(7, 1 << 30).name);
    }
}
