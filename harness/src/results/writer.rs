//! Writes `results/<run-id>/run.json` and `samples.csv`, atomically (temp file, fsync, rename),
//! after every cell: a run killed halfway leaves every finished cell readable.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::schema::RunDoc;

/// `20261122T173000Z-ab12`: UTC time of the start plus 4 random hex digits.
pub fn new_run_id() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let ts = now.format(&fmt).unwrap_or_else(|_| "00000000T000000Z".into());
    format!("{ts}-{:04x}", rand::random::<u16>())
}

pub struct ResultsWriter {
    dir: PathBuf,
}

impl ResultsWriter {
    /// Create `out/<run_id>/`.
    pub fn create(out: &Path, run_id: &str) -> anyhow::Result<Self> {
        let dir = out.join(run_id);
        std::fs::create_dir_all(&dir).with_context(|| format!("create results dir {}", dir.display()))?;
        Ok(ResultsWriter { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn write(&self, doc: &RunDoc) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(doc)?;
        write_atomic(&self.dir.join("run.json"), &json)?;
        write_atomic(&self.dir.join("samples.csv"), samples_csv(doc).as_bytes())?;
        Ok(())
    }
}

/// Write `path` so that readers see the old or the new content, never a torn file.
pub fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("temp file in {}", dir.display()))?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).with_context(|| format!("rename to {}", path.display()))?;
    // Make the rename itself durable.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub const CSV_HEADER: &str = "run_id,workload,driver,params,metric,value,unit,sample,rep";

/// One row per recorded sample.
pub fn samples_csv(doc: &RunDoc) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for cell in &doc.cells {
        let params = cowbench_workloads::params_string(&cell.params);
        for (name, m) in &cell.metrics {
            for (i, v) in m.samples.iter().enumerate() {
                let rep = m.sample_rep.get(i).copied().unwrap_or(0);
                let row = [
                    csv_field(&doc.run_id),
                    csv_field(&cell.workload),
                    csv_field(&cell.driver),
                    csv_field(&params),
                    csv_field(name),
                    format!("{v}"),
                    csv_field(&m.unit),
                    i.to_string(),
                    rep.to_string(),
                ];
                out.push_str(&row.join(","));
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_id_shape() {
        let id = new_run_id();
        assert_eq!(id.len(), "20261122T173000Z-ab12".len(), "{id}");
        assert_eq!(&id[8..9], "T");
        assert_eq!(&id[15..17], "Z-");
    }

    #[test]
    fn csv_quotes() {
        assert_eq!(csv_field("a=1;b=2"), "a=1;b=2");
        assert_eq!(csv_field("x,\"y\""), "\"x,\"\"y\"\"\"");
    }

    #[test]
    fn atomic_write_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1, "no temp file left");
    }
}
