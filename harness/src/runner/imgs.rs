//! Images for the lookup, metadata and IO workloads, built once per driver and reused by every
//! cell that needs them, and fast incompressible file content.
//!
//! `image::build` hashes every layer to decide reuse, which for a 64 MiB file costs more than the
//! cells that use it; these images are named after everything that determines their content
//! (shape, sizes, seed), so an image of that name that is complete in the driver is reused as it
//! is. The driver's teardown at the end of a run removes them.

use std::io::{self, Write};

use cowbench_drivers::{Driver, Labels};

use crate::image::{self, probe_bin, synth, Generated, Image};

pub use cowbench_workloads::images::content::Pattern;

/// A layer tar written by `f`.
pub type LayerFn<'a> = Box<dyn Fn(&mut dyn Write) -> io::Result<()> + Sync + 'a>;

/// The base layer: busybox with its applets and the static probe.
pub fn base_layer() -> anyhow::Result<LayerFn<'static>> {
    let busybox = probe_bin::busybox()?;
    let probe = probe_bin::find_or_build()?;
    Ok(Box::new(move |w: &mut dyn Write| synth::write_base_layer(&busybox, &probe, w)))
}

/// Image `name` with the base layer and `layers` above it: reused when complete in `driver`,
/// else (re)built layer by layer (prepare, apply, commit).
pub fn load_or_build(driver: &dyn Driver, name: &str, layers: Vec<LayerFn<'_>>) -> anyhow::Result<Image> {
    let total = layers.len() + 1;
    if let Ok(img) = image::load(driver, name) {
        if img.layers.len() == total {
            return Ok(img);
        }
    }
    // A partial or different image of the same name (an interrupted build) goes first.
    image::remove(driver, name)?;
    let config = image::probe_config();
    let config_json = serde_json::to_string(&config)?;
    let mut all = vec![base_layer()?];
    all.extend(layers);
    let mut parent: Option<String> = None;
    let mut keys = Vec::new();
    for (n, write) in all.into_iter().enumerate() {
        let key = image::layer_key(name, n);
        let active = format!("{key}.build");
        driver.prepare(&active, parent.as_deref(), &Labels::new())?;
        let src = Generated { write: move |w: &mut dyn Write| write(w) };
        if let Err(e) = src.apply_unhashed(driver, &active) {
            if let Err(e2) = driver.remove(&active) {
                log::warn!("image {name}: removing half-built layer {active}: {e2}");
            }
            return Err(e.into());
        }
        let mut labels = Labels::new();
        labels.insert(image::LABEL_IMAGE.into(), name.into());
        if n + 1 == total {
            labels.insert(image::LABEL_CONFIG.into(), config_json.clone());
        }
        driver.commit(&key, &active, &labels)?;
        parent = Some(key.clone());
        keys.push(key);
    }
    Ok(Image { name: name.into(), top: keys.last().cloned().expect("at least the base layer"), layers: keys, config })
}
