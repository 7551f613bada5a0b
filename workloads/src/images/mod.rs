//! Images of workloads: what they hold (shapes, deterministic synthetic layers, workload-made
//! layers) and the content generators. Building them in a driver is the harness's job
//! ([`crate::lab::Lab::image`]: one build-or-reuse policy); everything that decides what an
//! image contains is here, so two workloads asking for the same spec share one image.

use std::io::{self, Write};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub mod content;
pub mod large;
pub mod synth;

pub use large::{large_file, LARGE_PATH};
pub use synth::{SizeDist, SynthSpec};

/// The fixed shapes workloads need, plus the general synthetic generator.
/// Serialised adjacently tagged (`{"shape": ..., "of": ...}`): the serialised spec is what
/// image reuse compares, and an internally tagged enum cannot hold `Custom`'s list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "shape", content = "of", rename_all = "snake_case")]
pub enum Shape {
    /// Only the base layer.
    Base,
    Synthetic(SynthSpec),
    /// One file of `bytes` at `path`.
    LargeFile { path: String, bytes: u64 },
    /// `count` files of `bytes` under /small, `per_dir` per directory.
    SmallFiles { count: usize, bytes: u64, per_dir: usize },
    /// `depth` layers; `target` (of `target_bytes`) in the bottom one.
    DeepStack { depth: usize, target: String, target_bytes: u64 },
    /// Layers the workload writes itself, bottom to top.
    Custom(Vec<CustomLayer>),
}

/// A synthetic image: the base layer (busybox + probe) and the shape's layers above it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageSpec {
    pub name: String,
    pub seed: u64,
    pub shape: Shape,
}

impl ImageSpec {
    pub fn new(name: &str, seed: u64, shape: Shape) -> Self {
        ImageSpec { name: name.into(), seed, shape }
    }
}

/// Writes one layer tar.
pub type WriteLayer = dyn Fn(&mut dyn Write) -> io::Result<()> + Send + Sync;

/// A layer a workload writes itself (a directory tree for lookups, files for IO ...).
/// `recipe` names everything that determines the content (sizes, counts, seed): two layers
/// with the same recipe must be byte-identical, since the recipe is what image reuse compares.
#[derive(Clone, Serialize, Deserialize)]
pub struct CustomLayer {
    pub recipe: String,
    #[serde(skip, default = "unserialisable_writer")]
    pub write: Arc<WriteLayer>,
}

fn unserialisable_writer() -> Arc<WriteLayer> {
    Arc::new(|_: &mut dyn Write| Err(io::Error::other("a workload-made layer cannot be rebuilt from its description")))
}

impl CustomLayer {
    pub fn new(recipe: impl Into<String>, write: impl Fn(&mut dyn Write) -> io::Result<()> + Send + Sync + 'static) -> Self {
        CustomLayer { recipe: recipe.into(), write: Arc::new(write) }
    }
}

impl std::fmt::Debug for CustomLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomLayer").field("recipe", &self.recipe).finish_non_exhaustive()
    }
}

impl PartialEq for CustomLayer {
    fn eq(&self, other: &Self) -> bool {
        self.recipe == other.recipe
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape serialises (image reuse compares the serialised spec), and a workload-made
    /// layer by its recipe only.
    #[test]
    fn every_shape_serialises() {
        let layer = |r: &str| CustomLayer::new(r, |_: &mut dyn Write| Ok(()));
        let shapes = [
            Shape::Base,
            Shape::Synthetic(SynthSpec::default()),
            Shape::LargeFile { path: "/f".into(), bytes: 1 },
            Shape::SmallFiles { count: 1, bytes: 1, per_dir: 1 },
            Shape::DeepStack { depth: 2, target: "/t".into(), target_bytes: 1 },
            Shape::Custom(vec![layer("a"), layer("b")]),
        ];
        for shape in shapes {
            let json = serde_json::to_string(&ImageSpec::new("i", 1, shape.clone())).unwrap();
            assert!(json.contains("\"shape\""), "{json}");
        }
        let a = serde_json::to_string(&Shape::Custom(vec![layer("recipe one")])).unwrap();
        let b = serde_json::to_string(&Shape::Custom(vec![layer("recipe two")])).unwrap();
        assert!(a.contains("recipe one"), "{a}");
        assert_ne!(a, b);
    }
}
