//! A run directory's JSON files: `manifest.json` ([`Manifest`]: what was asked for, with which
//! model, which tables, and each shard's progress) and `shards/shard-I-of-N.json`
//! ([`ShardStatus`]), with the one atomic writer every JSON file of a run goes through
//! ([`write_json_atomic`]) and the one place a table's row count is read from
//! ([`Manifest::table_rows`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StoreError;

/// Name of the manifest file in a run directory.
pub const MANIFEST: &str = "manifest.json";

/// Folder of a run directory holding each shard's progress file.
pub const SHARDS_DIR: &str = "shards";

/// Which slice of the dataset one process runs: the prompts whose dataset index is
/// `index` mod `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// A shard that is not `I/N` with `0 <= I < N`.
#[derive(Debug, thiserror::Error)]
#[error("--shard `{0}`: expected I/N with 0 <= I < N")]
pub struct BadShard(pub String);

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parses `I/N` (0 <= I < N).
    pub fn parse(s: &str) -> Result<Shard, BadShard> {
        let bad = || BadShard(s.to_string());
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<u32>().map_err(|_| bad())?,
            n.trim().parse::<u32>().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// `shard-III-of-NNN.json`, the shard's status file in [`SHARDS_DIR`].
    pub fn status_file_name(self) -> String {
        format!("shard-{:03}-of-{:03}.json", self.index, self.count)
    }

    /// `RUN_DIR/shards/shard-III-of-NNN.json`.
    pub fn status_path(self, run_dir: &Path) -> PathBuf {
        run_dir.join(SHARDS_DIR).join(self.status_file_name())
    }
}

/// A shard's progress, `RUN_DIR/shards/shard-I-of-N.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ShardStatus {
    /// `running` or `done`.
    pub status: String,
    /// Windows whose parts are complete; a resumed run starts after them.
    pub windows_done: u64,
    pub prompts_done: u64,
    pub tokens_done: u64,
    /// Rows written per table.
    pub rows: BTreeMap<String, u64>,
    /// Compute + write time of this shard, summed over its (resumed) runs.
    pub seconds: f64,
    /// Seconds per stage (`load`, `tokenize`, `generate`, `forward`, each analysis, `write`,
    /// `nmf`), summed over its (resumed) runs. Compute stages run on one thread and writing on
    /// another, overlapped, so the stages add up to more than `seconds`.
    #[serde(default)]
    pub stage_seconds: BTreeMap<String, f64>,
}

impl ShardStatus {
    /// Adds `seconds` to `stage`.
    pub fn add_stage(&mut self, stage: &str, seconds: f64) {
        *self.stage_seconds.entry(stage.to_string()).or_default() += seconds;
    }
}

/// The run-level manifest (`manifest.json`): what was asked for and with what. Shard progress
/// lives in the shard status files and is copied into `shards` when a shard finishes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub tokenlens_version: String,
    pub spec_path: PathBuf,
    /// The spec file's text, verbatim; `--resume` refuses a changed spec.
    pub spec_yaml: String,
    pub spec: serde_json::Value,
    pub model: serde_json::Value,
    pub shard_count: u32,
    pub tables: Vec<String>,
    /// Shard file name -> status, as of the last shard to finish.
    pub shards: BTreeMap<String, ShardStatus>,
    /// `done` once every shard is.
    pub status: String,
    /// Rows of the NMF tables (`tokenlens nmf` or the pipeline's NMF stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nmf_rows: Option<BTreeMap<String, u64>>,
    /// Rows of the neuron tables (`tokenlens neurons` or the pipeline's neurons stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neurons_rows: Option<BTreeMap<String, u64>>,
    /// Rows of the run's own `similarity` table (the pipeline's similarity stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub similarity_rows: Option<BTreeMap<String, u64>>,
}

impl Manifest {
    /// `RUN_DIR/manifest.json`.
    pub fn path(run_dir: &Path) -> PathBuf {
        run_dir.join(MANIFEST)
    }

    pub fn read(run_dir: &Path) -> Result<Manifest, StoreError> {
        read_json(&Self::path(run_dir))
    }

    pub fn write(&self, run_dir: &Path) -> Result<(), StoreError> {
        write_json_atomic(&Self::path(run_dir), self)
    }

    /// Rows per table as the run recorded them: the shards' tables summed over the shards, and
    /// the NMF, neuron and similarity tables (written once for the whole corpus). The viewer's
    /// overview reads the same fields of `manifest.json`.
    pub fn table_rows(&self) -> BTreeMap<String, u64> {
        let mut rows = BTreeMap::new();
        for s in self.shards.values() {
            for (t, n) in &s.rows {
                *rows.entry(t.clone()).or_default() += n;
            }
        }
        let stages = [&self.nmf_rows, &self.neurons_rows, &self.similarity_rows];
        for (t, n) in stages.into_iter().flatten().flatten() {
            rows.insert(t.clone(), *n);
        }
        rows
    }

    /// Records the NMF tables' row counts (`nmf_rows`) in the manifest of `run_dir`, keeping
    /// every other field as it is (also of manifests that are not a pipeline's, e.g. a synthetic
    /// run's). A run directory without a manifest is left as it is.
    pub fn record_nmf_rows(run_dir: &Path, rows: &[(&str, u64)]) -> Result<(), StoreError> {
        Self::record_stage_rows(run_dir, "nmf_rows", rows)
    }

    /// Records the neuron tables' row counts (`neurons_rows`), as [`Manifest::record_nmf_rows`].
    pub fn record_neurons_rows(run_dir: &Path, rows: &[(&str, u64)]) -> Result<(), StoreError> {
        Self::record_stage_rows(run_dir, "neurons_rows", rows)
    }

    /// Records the run's own `similarity` table's rows (`similarity_rows`), as
    /// [`Manifest::record_nmf_rows`].
    pub fn record_similarity_rows(run_dir: &Path, rows: &[(&str, u64)]) -> Result<(), StoreError> {
        Self::record_stage_rows(run_dir, "similarity_rows", rows)
    }

    /// Sets the manifest's field `key` to the row counts of a corpus-level stage's tables.
    fn record_stage_rows(
        run_dir: &Path,
        key: &str,
        rows: &[(&str, u64)],
    ) -> Result<(), StoreError> {
        let path = Self::path(run_dir);
        if !path.exists() {
            return Ok(());
        }
        let mut m: serde_json::Value = read_json(&path)?;
        let rows: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(t, n)| (t.to_string(), (*n).into()))
            .collect();
        m[key] = rows.into();
        write_json_atomic(&path, &m)
    }
}

/// Holds an exclusive lock on `RUN_DIR/shards/.lock` (created if missing) until the returned file
/// is dropped: shards finishing at the same moment update the manifest one after the other, so
/// none writes back a manifest read before another shard's status was recorded.
pub fn lock_run(run_dir: &Path) -> Result<File, StoreError> {
    let path = run_dir.join(SHARDS_DIR).join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::io(&path, e))?;
    // `File::lock` needs Rust 1.89 (the crate's MSRV is 1.88): flock(2) directly.
    use std::os::fd::AsRawFd;
    // SAFETY: flock on an open file descriptor this function owns; no memory is shared.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(StoreError::io(&path, std::io::Error::last_os_error()));
    }
    Ok(f)
}

impl ShardStatus {
    pub fn read(path: &Path) -> Result<ShardStatus, StoreError> {
        read_json(path)
    }

    pub fn write(&self, path: &Path) -> Result<(), StoreError> {
        write_json_atomic(path, self)
    }
}

/// Writes `value` as pretty JSON to `path` atomically: a temporary file beside it
/// (`.<name>.<pid>-<n>.tmp`, its own to this process and call, so shards of one run writing the
/// manifest at the same moment never share one), fsynced, renamed over `path`, and the directory
/// fsynced, so a crash leaves either the old file or the new one, never a part.
pub fn write_json_atomic(path: &Path, value: &impl Serialize) -> Result<(), StoreError> {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}-{n}.tmp", std::process::id()));
    let text = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Json {
        path: path.to_path_buf(),
        error: e,
    })?;
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()
    };
    write().map_err(|e| StoreError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))?;
    super::writer::sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Reads a run's JSON file (the manifest, a shard status).
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, StoreError> {
    let text = std::fs::read_to_string(path).map_err(|e| StoreError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| StoreError::NotARunFile {
        path: path.to_path_buf(),
        error: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_name_their_status_files() {
        assert_eq!(
            Shard::parse("3/16").unwrap(),
            Shard {
                index: 3,
                count: 16
            }
        );
        assert_eq!(Shard::parse(" 0 / 1 ").unwrap(), Shard::ALL);
        for bad in ["", "3", "16/16", "0/0", "-1/4", "a/b", "1/2/3"] {
            let e = Shard::parse(bad).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("--shard `{bad}`: expected I/N with 0 <= I < N")
            );
        }
        assert_eq!(
            Shard {
                index: 3,
                count: 16
            }
            .status_file_name(),
            "shard-003-of-016.json"
        );
    }

    #[test]
    fn json_files_are_replaced_whole_and_read_back() {
        let dir = std::env::temp_dir().join(format!("tokenlens-manifest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.json");
        let mut s = ShardStatus {
            status: "running".into(),
            windows_done: 2,
            ..ShardStatus::default()
        };
        s.rows.insert("tokens".into(), 7);
        s.write(&path).unwrap();
        s.windows_done = 3;
        s.write(&path).unwrap();
        assert_eq!(ShardStatus::read(&path).unwrap(), s);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["s.json"], "no temporary file is left");

        std::fs::write(&path, "{").unwrap();
        let e = format!(
            "{:#}",
            anyhow::Error::from(ShardStatus::read(&path).unwrap_err())
        );
        assert!(
            e.starts_with(&format!("{}: not a tokenlens run file: ", path.display())),
            "{e}"
        );

        // nmf_rows joins any manifest, keeping its other fields; the row counts add up.
        write_json_atomic(
            &Manifest::path(&dir),
            &serde_json::json!({"synthetic": {"docs": 3}}),
        )
        .unwrap();
        Manifest::record_nmf_rows(&dir, &[("nmf_summary", 5)]).unwrap();
        let v: serde_json::Value = read_json(&Manifest::path(&dir)).unwrap();
        assert_eq!(v["synthetic"]["docs"], 3);
        assert_eq!(v["nmf_rows"]["nmf_summary"], 5);
        Manifest::record_neurons_rows(&dir, &[("neuron_stats", 3)]).unwrap();
        let v: serde_json::Value = read_json(&Manifest::path(&dir)).unwrap();
        assert_eq!(v["neurons_rows"]["neuron_stats"], 3);
        assert_eq!(v["nmf_rows"]["nmf_summary"], 5);
        Manifest::record_similarity_rows(&dir, &[("similarity", 9)]).unwrap();
        let v: serde_json::Value = read_json(&Manifest::path(&dir)).unwrap();
        assert_eq!(v["similarity_rows"]["similarity"], 9);
        assert_eq!(v["neurons_rows"]["neuron_stats"], 3);
        let mut m = Manifest {
            tokenlens_version: "0".into(),
            spec_path: "p.yaml".into(),
            spec_yaml: String::new(),
            spec: serde_json::Value::Null,
            model: serde_json::Value::Null,
            shard_count: 2,
            tables: vec!["tokens".into()],
            shards: BTreeMap::new(),
            status: "done".into(),
            nmf_rows: Some(BTreeMap::from([("nmf_summary".to_string(), 5)])),
            neurons_rows: Some(BTreeMap::from([("neuron_stats".to_string(), 3)])),
            similarity_rows: Some(BTreeMap::from([("similarity".to_string(), 9)])),
        };
        m.shards.insert("a".into(), s.clone());
        m.shards.insert("b".into(), s);
        assert_eq!(
            m.table_rows(),
            BTreeMap::from([
                ("neuron_stats".to_string(), 3),
                ("nmf_summary".to_string(), 5),
                ("similarity".to_string(), 9),
                ("tokens".to_string(), 14)
            ])
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
