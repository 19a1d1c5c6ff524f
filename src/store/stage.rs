//! Replacing tables of an existing run (a stage run again on a finished run, e.g. `tokenlens nmf`).
//!
//! The new tables are written whole into a hidden staging run directory,
//! `RUN_DIR/.staging-<pid>.tmp/<table>/`, with the ordinary [`TableWriter`](super::TableWriter).
//! [`Staging::commit`] then moves each table folder into place: where the run already has the
//! table, the two folders are exchanged in one `renameat2(RENAME_EXCHANGE)` call (Linux), so a
//! reader of `RUN_DIR/<table>/*.parquet` sees either every old part or every new one, never a
//! mix and never nothing; elsewhere (or if the file system refuses the exchange) the old folder is
//! first renamed away, leaving a moment without the table. The old parts are deleted last. Tables
//! are swapped one after the other: across tables there is a moment where some are new and some
//! old.
//!
//! Staging folders are hidden (readers that glob `*.parquet` or pyarrow's dataset discovery do
//! not look into them), removed when a [`Staging`] is dropped uncommitted, and, if a crash left
//! one behind, removed by `RunDir::create` with `overwrite` like the tables themselves.

use std::path::{Path, PathBuf};

use super::StoreError;
use super::schema::TableDef;
use super::writer::RunDir;

/// Prefix and suffix of staging folder names in a run directory.
const PREFIX: &str = ".staging-";
const SUFFIX: &str = ".tmp";

/// Whether `name` (an entry of a run directory) is a staging folder, finished or left by a crash.
pub fn is_staging_name(name: &str) -> bool {
    name.len() > PREFIX.len() + SUFFIX.len() && name.starts_with(PREFIX) && name.ends_with(SUFFIX)
}

/// A hidden staging run directory inside a run, for tables that will replace the run's own.
#[derive(Debug)]
pub struct Staging {
    run: PathBuf,
    staging: RunDir,
    done: bool,
}

impl Staging {
    /// Creates `run/.staging-<pid>.tmp/` (emptied if a previous process of the same id left it).
    pub fn create(run: &Path) -> Result<Self, StoreError> {
        if !run.is_dir() {
            return Err(StoreError::RunDir {
                path: run.to_path_buf(),
                msg: "is not a run directory".into(),
            });
        }
        let dir = run.join(format!("{PREFIX}{}{SUFFIX}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        }
        let staging = RunDir::create(&dir, false)?;
        Ok(Staging {
            run: run.to_path_buf(),
            staging,
            done: false,
        })
    }

    /// The staging run directory: write the new tables here.
    pub fn run_dir(&self) -> &RunDir {
        &self.staging
    }

    /// Moves each table's staged folder to `RUN_DIR/<table>`, replacing the run's folder if it
    /// has one (see the module doc), then deletes the old parts and the staging folder.
    pub fn commit(mut self, tables: &[&TableDef]) -> Result<(), StoreError> {
        for t in tables {
            let new = self.staging.table_dir(t);
            let dst = self.run.join(t.name);
            if !new.is_dir() {
                return Err(StoreError::RunDir {
                    path: new,
                    msg: "was not written".into(),
                });
            }
            if dst.exists() {
                if !exchange(&new, &dst) {
                    // The old folder goes where the new one was, and is deleted below.
                    let old = self.staging.root().join(format!("{}.old", t.name));
                    std::fs::rename(&dst, &old).map_err(|e| StoreError::io(&dst, e))?;
                    std::fs::rename(&new, &dst).map_err(|e| StoreError::io(&dst, e))?;
                }
            } else {
                std::fs::rename(&new, &dst).map_err(|e| StoreError::io(&dst, e))?;
            }
        }
        std::fs::File::open(&self.run)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io(&self.run, e))?;
        self.done = true;
        let root = self.staging.root();
        std::fs::remove_dir_all(root).map_err(|e| StoreError::io(root, e))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(self.staging.root());
        }
    }
}

/// Atomically exchanges two paths; false if the platform or file system cannot.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn exchange(a: &Path, b: &Path) -> bool {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let (Ok(ca), Ok(cb)) = (
        CString::new(a.as_os_str().as_bytes()),
        CString::new(b.as_os_str().as_bytes()),
    ) else {
        return false;
    };
    // SAFETY: two valid NUL-terminated paths; renameat2 only reads them.
    unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        ) == 0
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn exchange(_: &Path, _: &Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema::{NMF_SUMMARY, NmfSummary, NmfSummaryRow, TableOptions};
    use crate::store::{TableWriter, WriterOptions};

    fn write_summary(run: &RunDir, iterations: i32) {
        let mut w = TableWriter::<NmfSummary>::create(
            run,
            &TableOptions::default(),
            &WriterOptions::default(),
        )
        .unwrap();
        for i in 1..=iterations {
            w.append(NmfSummaryRow {
                iteration: i,
                relative_error: 0.5,
                seconds: 0.1,
            })
            .unwrap();
        }
        w.finish().unwrap();
    }

    fn parts(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn rows(dir: &Path) -> i64 {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let f = std::fs::File::open(dir.join("part-000-00000.parquet")).unwrap();
        SerializedFileReader::new(f)
            .unwrap()
            .metadata()
            .file_metadata()
            .num_rows()
    }

    #[test]
    fn staged_tables_replace_or_join_the_run() {
        let root = std::env::temp_dir().join(format!("tokenlens-stage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let run = RunDir::create(&root, false).unwrap();
        std::fs::write(root.join("manifest.json"), "{}").unwrap();

        // A new table joins the run; no staging folder is left.
        let s = Staging::create(&root).unwrap();
        assert!(is_staging_name(
            &s.run_dir().root().file_name().unwrap().to_string_lossy()
        ));
        write_summary(s.run_dir(), 3);
        s.commit(&[&NMF_SUMMARY]).unwrap();
        assert_eq!(parts(&root), ["manifest.json", "nmf_summary"]);
        assert_eq!(rows(&run.table_dir(&NMF_SUMMARY)), 3);

        // An existing table is replaced by the new one.
        let s = Staging::create(&root).unwrap();
        write_summary(s.run_dir(), 5);
        s.commit(&[&NMF_SUMMARY]).unwrap();
        assert_eq!(parts(&root), ["manifest.json", "nmf_summary"]);
        assert_eq!(
            parts(&run.table_dir(&NMF_SUMMARY)),
            ["part-000-00000.parquet"]
        );
        assert_eq!(rows(&run.table_dir(&NMF_SUMMARY)), 5);

        // Dropped uncommitted (an error half-way): the run is untouched.
        let s = Staging::create(&root).unwrap();
        write_summary(s.run_dir(), 7);
        drop(s);
        assert_eq!(parts(&root), ["manifest.json", "nmf_summary"]);
        assert_eq!(rows(&run.table_dir(&NMF_SUMMARY)), 5);

        // A table that was not staged is an error, not a deleted table.
        let s = Staging::create(&root).unwrap();
        let e = s.commit(&[&NMF_SUMMARY]).unwrap_err().to_string();
        assert!(e.ends_with("nmf_summary: was not written"), "{e}");
        assert_eq!(rows(&run.table_dir(&NMF_SUMMARY)), 5);

        // A staging folder left by a crash is replaced with the run, like the tables.
        std::fs::create_dir_all(root.join(".staging-123.tmp/nmf_summary")).unwrap();
        RunDir::create(&root, true).unwrap();
        assert!(parts(&root).is_empty());
        assert!(!is_staging_name(".staging-.tmp") && !is_staging_name("staging-1.tmp"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
