//! The comparison directory `tokenlens compare` writes: `comparison.json` ([`ComparisonFile`])
//! and one folder per table. Everything is written into a hidden temporary directory beside it,
//! `.<name>.compare-<pid>.tmp` ([`OutDir`]), with the store's crash-safe part writers, and renamed
//! to its name only once every table and `comparison.json` are complete: a directory named DIR is
//! always a whole comparison, and a failed or killed comparison leaves no DIR (only, after a
//! kill, the hidden temporary one). An existing DIR is refused, or with `overwrite` replaced (if
//! it is a comparison directory: nothing else is ever deleted) by renaming it away after the new
//! one is complete.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::CompareError;
use super::matching::{Level, ModelInfo, Run};
use crate::store::manifest::{read_json, write_json_atomic};
use crate::store::writer::{RunDir, TableSummary};

/// The file that makes a directory a comparison directory.
pub const COMPARISON_JSON: &str = "comparison.json";

/// A comparison directory being written.
#[derive(Debug)]
pub struct OutDir {
    target: PathBuf,
    tmp: RunDir,
    done: bool,
}

impl OutDir {
    /// Checks that `target` may be written (it does not exist; or, with `overwrite`, it is a
    /// comparison directory or empty) and creates the hidden temporary directory beside it.
    pub fn create(target: &Path, overwrite: bool) -> Result<OutDir, CompareError> {
        check_target(target, overwrite)?;
        let name = target
            .file_name()
            .ok_or_else(|| CompareError::NotAComparison {
                dir: target.to_path_buf(),
            })?
            .to_string_lossy()
            .into_owned();
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| CompareError::Io {
            path: parent.clone(),
            source: e,
        })?;
        let tmp = parent.join(format!(".{name}.compare-{}.tmp", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| CompareError::Io {
                path: tmp.clone(),
                source: e,
            })?;
        }
        let tmp = RunDir::create(&tmp, false).map_err(|e| CompareError::Write {
            dir: target.to_path_buf(),
            source: Box::new(e),
        })?;
        Ok(OutDir {
            target: target.to_path_buf(),
            tmp,
            done: false,
        })
    }

    /// Where the tables are written until [`OutDir::commit`] (create a step's tables here).
    pub fn run_dir(&self) -> &RunDir {
        &self.tmp
    }

    /// The comparison directory's final path.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Writes `comparison.json` and renames the directory into place (replacing an existing
    /// comparison, which `create` has checked may be replaced).
    pub fn commit(mut self, file: &ComparisonFile) -> Result<(), CompareError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |e| CompareError::Io { path, source: e }
        };
        let root = self.tmp.root().to_path_buf();
        write_json_atomic(&root.join(COMPARISON_JSON), file).map_err(|e| CompareError::Write {
            dir: self.target.clone(),
            source: Box::new(e),
        })?;
        let mut old = None;
        if self.target.exists() {
            // Checked again: another process may have written it meanwhile.
            check_target(&self.target, true)?;
            let name = self
                .target
                .file_name()
                .unwrap_or_default()
                .to_string_lossy();
            let away = root.with_file_name(format!(".{name}.old-{}.tmp", std::process::id()));
            std::fs::rename(&self.target, &away).map_err(io(&self.target))?;
            old = Some(away);
        }
        std::fs::rename(&root, &self.target).map_err(io(&self.target))?;
        self.done = true;
        if let Some(parent) = self.target.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(io(parent))?;
        }
        if let Some(old) = old {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        Ok(())
    }
}

impl Drop for OutDir {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(self.tmp.root());
        }
    }
}

/// `target` does not exist, or `overwrite` and it is empty or a comparison directory.
fn check_target(target: &Path, overwrite: bool) -> Result<(), CompareError> {
    if !target.exists() {
        return Ok(());
    }
    if !overwrite {
        return Err(CompareError::OutExists {
            dir: target.to_path_buf(),
        });
    }
    let not_ours = || CompareError::NotAComparison {
        dir: target.to_path_buf(),
    };
    if !target.is_dir() {
        return Err(not_ours());
    }
    let empty = std::fs::read_dir(target)
        .map_err(|e| CompareError::Io {
            path: target.to_path_buf(),
            source: e,
        })?
        .next()
        .is_none();
    let json: Option<serde_json::Value> = read_json(&target.join(COMPARISON_JSON)).ok();
    if empty || json.is_some_and(|j| j["kind"] == "comparison") {
        Ok(())
    } else {
        Err(not_ours())
    }
}

/// A run as comparison.json records it.
#[derive(Debug, Clone, Serialize)]
pub struct RunEntry {
    /// The path as given on the command line.
    pub given: PathBuf,
    /// The absolute path.
    pub path: PathBuf,
    pub model: ModelInfo,
}

impl RunEntry {
    pub fn of(run: &Run) -> RunEntry {
        RunEntry {
            given: run.given.clone(),
            path: run.dir.clone(),
            model: run.model.clone(),
        }
    }
}

/// How many documents matched.
#[derive(Debug, Clone, Serialize)]
pub struct DocCounts {
    pub matched: usize,
    pub only_a: usize,
    pub only_b: usize,
    /// The first (at most 10) doc_ids only run A has, in its dataset order.
    pub only_a_first: Vec<String>,
    /// The first (at most 10) doc_ids only run B has.
    pub only_b_first: Vec<String>,
}

/// Something a step did not compare, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The columns, table or measure left out.
    pub what: String,
    pub why: String,
}

/// A table as comparison.json records it.
#[derive(Debug, Clone, Serialize)]
pub struct TableEntry {
    pub rows: u64,
    /// Part files, relative to the comparison directory.
    pub parts: Vec<String>,
}

impl TableEntry {
    pub fn of(s: &TableSummary) -> TableEntry {
        TableEntry {
            rows: s.rows,
            parts: s
                .parts
                .iter()
                .map(|p| {
                    let name = p.path.file_name().unwrap_or_default().to_string_lossy();
                    format!("{}/{name}", s.table)
                })
                .collect(),
        }
    }
}

/// `comparison.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ComparisonFile {
    /// Always `comparison`: what makes a directory a comparison directory.
    pub kind: &'static str,
    pub tokenlens_version: String,
    pub run_a: RunEntry,
    /// None when one run was given.
    pub run_b: Option<RunEntry>,
    pub level: Level,
    pub docs: DocCounts,
    /// Positions whose contexts are the same in both runs (the sum of `common`).
    pub positions_compared: u64,
    /// What was compared, one sentence each.
    pub compared: Vec<String>,
    pub skipped: Vec<Skipped>,
    /// Each table written: rows and parts.
    pub tables: BTreeMap<String, TableEntry>,
    /// Seconds per step (`match` and each step's name) and `total`.
    pub seconds: BTreeMap<String, f64>,
}
