//! Images: stacks of committed layers in a driver, built from synthetic tar streams or
//! imported from `docker save` tarballs and OCI image layouts.

use serde::{Deserialize, Serialize};

/// What a container of this image runs by default (the OCI image config's `config` part).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
}

/// An image in one driver: committed layers, bottom to top.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub name: String,
    /// Committed layer keys, bottom → top.
    pub layers: Vec<String>,
    /// The top layer (the parent of every container's active layer).
    pub top: String,
    pub config: ImageConfig,
}
