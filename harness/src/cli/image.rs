//! `cowbench image import PATH --driver D [--name N] [--json]` and `cowbench image ls|rm`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use cowbench_drivers::registry;

use super::RootArgs;
use crate::image::{self, Image};

#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// Backend: overlay, aufs, btrfs, devicemapper, zfs, vfs.
    #[arg(long, short = 'd', global = true)]
    pub driver: Option<String>,
    #[command(flatten)]
    pub root: RootArgs,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub op: Op,
}

#[derive(Debug, Subcommand)]
pub enum Op {
    /// Import a `docker save` tarball or an OCI image layout (directory or tar).
    Import {
        path: PathBuf,
        /// Image name (default: its tag, else the file name).
        #[arg(long)]
        name: Option<String>,
    },
    /// List the images in the driver.
    Ls,
    /// Remove an image's layers (refused while containers use them).
    Rm { name: String },
}

fn print_image(img: &Image, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(img)?);
    } else {
        println!("name: {}", img.name);
        println!("top: {}", img.top);
        println!("layers:");
        for l in &img.layers {
            println!("  {l}");
        }
        let c = &img.config;
        let cmd: Vec<&String> = c.entrypoint.iter().chain(c.cmd.iter()).collect();
        println!("cmd: {}", cmd.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "));
        if let Some(w) = &c.workdir {
            println!("workdir: {w}");
        }
        for e in &c.env {
            println!("env: {e}");
        }
    }
    Ok(())
}

pub fn run(args: ImageArgs) -> anyhow::Result<ExitCode> {
    let Some(driver_name) = args.driver.as_deref() else {
        eprintln!("cowbench image: --driver is required");
        return Ok(ExitCode::from(2));
    };
    let driver = registry::open(driver_name, &args.root.driver_config())?;
    // One line on stderr: an image error's message already names its cause.
    let one_line = |e: image::Error| anyhow::anyhow!("{e}");
    match args.op {
        Op::Import { path, name } => {
            let img = image::import(driver.as_ref(), &path, name.as_deref()).map_err(one_line)?;
            print_image(&img, args.json)?;
        }
        Op::Ls => {
            let imgs = image::list(driver.as_ref()).map_err(one_line)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&imgs)?);
            } else {
                println!("{:<32} {:<8} TOP", "NAME", "LAYERS");
                for i in imgs {
                    println!("{:<32} {:<8} {}", i.name, i.layers.len(), i.top);
                }
            }
        }
        Op::Rm { name } => image::remove(driver.as_ref(), &name).map_err(one_line)?,
    }
    Ok(ExitCode::SUCCESS)
}
