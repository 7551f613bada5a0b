//! `cowbench snapshot --driver D <op>`: the snapshotter by hand, one operation per call.
//! State persists under --root, so a sequence of calls (prepare, apply, commit, mount ...)
//! builds layers exactly as the harness does.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use cowbench_drivers::{registry, Driver, Labels, LayerInfo};

use super::RootArgs;

#[derive(Debug, clap::Args)]
pub struct SnapshotArgs {
    /// Backend: overlay, aufs, btrfs, devicemapper, zfs, vfs.
    #[arg(long, short = 'd')]
    pub driver: String,
    #[command(flatten)]
    pub root: RootArgs,
    /// Print JSON where the operation lists or reports something.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub op: Op,
}

#[derive(Debug, Subcommand)]
pub enum Op {
    /// Writable layer KEY on top of committed PARENT (or empty).
    Prepare { key: String, parent: Option<String>, #[arg(long = "label", value_parser = super::parse_kv)] labels: Vec<(String, String)> },
    /// Read-only view KEY of committed PARENT.
    View { key: String, parent: String },
    /// Freeze active layer KEY as committed layer NAME.
    Commit { name: String, key: String },
    /// Mount layer KEY at TARGET (which must exist).
    Mount { key: String, target: PathBuf },
    /// Unmount TARGET.
    Unmount { target: PathBuf },
    /// Remove layer KEY (refused while it has children).
    Remove { key: String },
    /// Apply an OCI layer tar (plain, gzip, zstd) from FILE or stdin to active layer KEY.
    Apply { key: String, file: Option<PathBuf> },
    /// Write layer KEY's changes as an OCI layer tar to FILE or stdout.
    Diff { key: String, file: Option<PathBuf> },
    /// List layer KEY's changes against its parent (A added, M modified, D deleted).
    Changes { key: String },
    /// Bytes and inodes used by layer KEY alone.
    Usage { key: String },
    /// List every layer.
    Ls,
    /// Backend facts: backing device, pool usage, implementation.
    Status,
    /// Release the backend's backing store under --root (all layers are lost).
    Teardown,
}

fn is_stdio(p: &Option<PathBuf>) -> bool {
    p.as_deref().map_or(true, |p| p == Path::new("-"))
}

pub fn run(args: SnapshotArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.root.driver_config();
    let d: Box<dyn Driver> = registry::open(&args.driver, &cfg)?;
    let json = args.json;
    let print_layer = |l: &LayerInfo| -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(l)?);
        }
        Ok(())
    };
    match args.op {
        Op::Prepare { key, parent, labels } => {
            let labels: Labels = labels.into_iter().collect();
            print_layer(&d.prepare(&key, parent.as_deref(), &labels)?)?;
        }
        Op::View { key, parent } => print_layer(&d.view(&key, &parent, &Labels::new())?)?,
        Op::Commit { name, key } => print_layer(&d.commit(&name, &key, &Labels::new())?)?,
        Op::Mount { key, target } => d.mount(&key, &target)?,
        Op::Unmount { target } => d.unmount(&target)?,
        Op::Remove { key } => d.remove(&key)?,
        Op::Apply { key, file } => {
            let mut input: Box<dyn Read> = if is_stdio(&file) {
                Box::new(io::stdin().lock())
            } else {
                let p = file.unwrap();
                Box::new(BufReader::new(File::open(&p).with_context(|| format!("open {}", p.display()))?))
            };
            let stats = d.apply(&key, &mut input)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                eprintln!("applied {} entries, {} whiteouts, {} bytes", stats.entries, stats.whiteouts, stats.bytes);
            }
        }
        Op::Diff { key, file } => {
            let mut out: Box<dyn Write> = if is_stdio(&file) {
                Box::new(BufWriter::new(io::stdout().lock()))
            } else {
                let p = file.unwrap();
                Box::new(BufWriter::new(File::create(&p).with_context(|| format!("create {}", p.display()))?))
            };
            d.diff(&key, &mut out)?;
            out.flush()?;
        }
        Op::Changes { key } => {
            let changes = d.changes(&key)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&changes)?);
            } else {
                for c in changes {
                    let k = match c.kind {
                        cowbench_drivers::ChangeKind::Added => 'A',
                        cowbench_drivers::ChangeKind::Modified => 'M',
                        cowbench_drivers::ChangeKind::Deleted => 'D',
                    };
                    println!("{k} /{}", c.path.display());
                }
            }
        }
        Op::Usage { key } => {
            let u = d.usage(&key)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&u)?);
            } else {
                println!("bytes {}\ninodes {}", u.bytes, u.inodes);
            }
        }
        Op::Ls => {
            let layers = d.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&layers)?);
            } else {
                println!("{:<24} {:<10} {:<24} {}", "KEY", "KIND", "PARENT", "ID");
                for l in layers {
                    println!("{:<24} {:<10} {:<24} {}", l.key, l.kind.to_string(), l.parent.as_deref().unwrap_or("-"), l.id);
                }
            }
        }
        Op::Status => {
            let s = d.status()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                for (k, v) in s.display_rows() {
                    println!("{k}: {v}");
                }
            }
        }
        Op::Teardown => d.teardown()?,
    }
    Ok(ExitCode::SUCCESS)
}
