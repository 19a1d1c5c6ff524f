//! Writing tables to Parquet in a run directory: [`RunDir`] (creation, overwrite rules), [`PartWriter`] (one crash-safe part file) and [`TableWriter`] (a table's rows,
//! buffered into record batches, row groups and parts).
//!
//! Layout: `RUN_DIR/manifest.json` and `RUN_DIR/<table>/part-<shard>-<seq>.parquet`. A part is
//! written as the hidden `.part-<shard>-<seq>.parquet.tmp`, fsynced and renamed when complete, so
//! a `*.parquet` file is always whole; readers globbing `RUN_DIR/<table>/*.parquet` (or pyarrow
//! reading the folder, which skips hidden files) never see a partial file.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Compression, Type as PhysicalType, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Serialize;

use super::StoreError;
use super::manifest::{MANIFEST, SHARDS_DIR};
use super::schema::{ALL_TABLES, Table, TableDef, TableOptions};

/// Sizes and compression of the Parquet output.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// A table's buffered rows become a record batch (handed to the Parquet writer) at this many
    /// rows or bytes, whichever comes first.
    pub batch_rows: usize,
    pub batch_bytes: usize,
    /// A row group is closed at this many rows or (estimated, encoded) bytes, whichever first.
    pub row_group_rows: usize,
    pub row_group_bytes: usize,
    /// A part file is closed, and the next one started, once it holds this many bytes.
    pub part_bytes: u64,
    /// zstd level (1..=22).
    pub zstd_level: i32,
    /// The `<shard>` of part names: one per process or thread writing the same table.
    pub shard: u32,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            batch_rows: 64 * 1024,
            batch_bytes: 16 << 20,
            // Readers (duckdb, polars) parallelize over row groups; ~1M rows or 64 MB each. The
            // open row group of each table is held in memory (encoded) until it is closed.
            row_group_rows: 1 << 20,
            row_group_bytes: 64 << 20,
            part_bytes: 1 << 30,
            zstd_level: 3,
            shard: 0,
        }
    }
}

impl WriterOptions {
    /// The writer's properties for a table of `schema`. Floating-point columns (f32, f64 and
    /// f16, the lists of activations and residuals among them) are written without a dictionary:
    /// their values are almost all distinct, so the dictionary only cost the writer a hash of
    /// every value before it gave up (~2 s of the quickstart's 9 s of writing); strings and
    /// integers keep it.
    fn properties(
        &self,
        schema: &Schema,
    ) -> Result<WriterProperties, parquet::errors::ParquetError> {
        let descr = ArrowSchemaConverter::new().convert(schema)?;
        let mut b = WriterProperties::builder();
        for col in descr.columns() {
            if matches!(
                col.physical_type(),
                PhysicalType::FLOAT | PhysicalType::DOUBLE | PhysicalType::FIXED_LEN_BYTE_ARRAY
            ) {
                b = b.set_column_dictionary_enabled(col.path().clone(), false);
            }
        }
        Ok(
            b.set_compression(Compression::ZSTD(ZstdLevel::try_new(self.zstd_level)?))
                .set_max_row_group_row_count(Some(self.row_group_rows.max(1)))
                .set_max_row_group_bytes(Some(self.row_group_bytes.max(1)))
                .set_created_by(format!("tokenlens {}", env!("CARGO_PKG_VERSION")))
                .build(),
        )
    }
}

/// A finished part file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartInfo {
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
    pub row_groups: usize,
}

/// The name of part `seq` of shard `shard`.
pub fn part_file_name(shard: u32, seq: u32) -> String {
    format!("part-{shard:03}-{seq:05}.parquet")
}

/// One Parquet part file, written to `.<name>.tmp` and renamed to `<name>` by
/// [`PartWriter::finish`].
/// Dropped unfinished, it deletes its temporary file.
pub struct PartWriter {
    path: PathBuf,
    tmp: PathBuf,
    writer: Option<ArrowWriter<File>>,
    rows: u64,
}

impl std::fmt::Debug for PartWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("PartWriter")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .finish()
    }
}

impl PartWriter {
    /// Starts `dir/part-<shard>-<seq>.parquet` (as a `.tmp` file). The final file must not
    /// exist.
    pub fn create(
        dir: &Path,
        shard: u32,
        seq: u32,
        schema: SchemaRef,
        opts: &WriterOptions,
    ) -> Result<Self, StoreError> {
        let name = part_file_name(shard, seq);
        let path = dir.join(&name);
        if path.exists() {
            return Err(StoreError::RunDir {
                path,
                msg: "already exists".into(),
            });
        }
        // Hidden, so that globs (`*.parquet`) and pyarrow's dataset discovery skip it.
        let tmp = dir.join(format!(".{name}.tmp"));
        let file = File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
        let props = opts
            .properties(&schema)
            .map_err(|e| StoreError::parquet(&tmp, e))?;
        let writer = ArrowWriter::try_new(file, schema, Some(props))
            .map_err(|e| StoreError::parquet(&tmp, e))?;
        Ok(PartWriter {
            path,
            tmp,
            writer: Some(writer),
            rows: 0,
        })
    }

    /// The final path (which exists only after `finish`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes written so far plus the estimated size of the open row group.
    pub fn bytes(&self) -> u64 {
        self.writer
            .as_ref()
            .map_or(0, |w| (w.bytes_written() + w.in_progress_size()) as u64)
    }

    /// Appends a batch; row groups are closed as they reach the size limits.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
        let w = self.writer.as_mut().expect("PartWriter used after finish");
        w.write(batch)
            .map_err(|e| StoreError::parquet(&self.tmp, e))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Writes the footer, fsyncs, renames `.tmp` to `.parquet` and fsyncs the directory.
    pub fn finish(mut self) -> Result<PartInfo, StoreError> {
        let w = self.writer.take().expect("PartWriter finished twice");
        let row_groups = w.flushed_row_groups().len() + usize::from(w.in_progress_rows() > 0);
        let file = w
            .into_inner()
            .map_err(|e| StoreError::parquet(&self.tmp, e))?;
        file.sync_all().map_err(|e| StoreError::io(&self.tmp, e))?;
        let bytes = file
            .metadata()
            .map_err(|e| StoreError::io(&self.tmp, e))?
            .len();
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| StoreError::io(&self.path, e))?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        Ok(PartInfo {
            path: self.path.clone(),
            rows: self.rows,
            bytes,
            row_groups,
        })
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

/// What a table writer wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableSummary {
    pub table: &'static str,
    pub rows: u64,
    pub parts: Vec<PartInfo>,
}

/// Writes one table of a run: rows are buffered in `T`'s column builders, handed to the current
/// part as record batches, and parts are rolled at `part_bytes`. A table that gets no rows still
/// gets one (empty) part, so every table of a run can be read with its schema.
pub struct TableWriter<T: Table> {
    dir: PathBuf,
    opts: WriterOptions,
    builder: T,
    part: Option<PartWriter>,
    seq: u32,
    parts: Vec<PartInfo>,
    rows: u64,
}

impl<T: Table> std::fmt::Debug for TableWriter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("TableWriter")
            .field("table", &T::def().name)
            .field("rows", &self.rows)
            .finish()
    }
}

impl<T: Table> TableWriter<T> {
    /// Creates `RUN_DIR/<table>/`.
    pub fn create(
        run: &RunDir,
        table_opts: &TableOptions,
        opts: &WriterOptions,
    ) -> Result<Self, StoreError> {
        let dir = run.table_dir(T::def());
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        Ok(TableWriter {
            dir,
            opts: opts.clone(),
            builder: T::new(table_opts),
            part: None,
            seq: 0,
            parts: Vec::new(),
            rows: 0,
        })
    }

    /// Rows appended so far.
    /// Numbers this writer's parts from `seq` on (e.g. one range per window of a run).
    pub fn starting_at(mut self, seq: u32) -> Self {
        self.seq = seq;
        self
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn append(&mut self, row: T::Row<'_>) -> Result<(), StoreError> {
        self.builder.append(row);
        self.rows += 1;
        if self.builder.len() >= self.opts.batch_rows
            || self.builder.bytes() >= self.opts.batch_bytes
        {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands the buffered rows to the current part (starting one if needed), and rolls the part
    /// when it is full.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if self.builder.is_empty() {
            return Ok(());
        }
        let batch = self.builder.finish();
        let part = match &mut self.part {
            Some(p) => p,
            None => self.part.insert(PartWriter::create(
                &self.dir,
                self.opts.shard,
                self.seq,
                self.builder.schema(),
                &self.opts,
            )?),
        };
        part.write(&batch)?;
        if part.bytes() >= self.opts.part_bytes {
            self.finish_part()?;
        }
        Ok(())
    }

    fn finish_part(&mut self) -> Result<(), StoreError> {
        if let Some(p) = self.part.take() {
            self.parts.push(p.finish()?);
            self.seq += 1;
        }
        Ok(())
    }

    /// Flushes and finishes the open part; returns every part written.
    pub fn finish(mut self) -> Result<TableSummary, StoreError> {
        self.flush()?;
        if self.parts.is_empty() && self.part.is_none() {
            // No rows at all: one empty part carrying the schema.
            self.part = Some(PartWriter::create(
                &self.dir,
                self.opts.shard,
                self.seq,
                self.builder.schema(),
                &self.opts,
            )?);
        }
        self.finish_part()?;
        Ok(TableSummary {
            table: T::def().name,
            rows: self.rows,
            parts: std::mem::take(&mut self.parts),
        })
    }
}

/// A run directory: `manifest.json` and one folder per table.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// Creates the run directory. An existing empty directory is used as is. A non-empty one is
    /// an error unless `overwrite`; with `overwrite` it is emptied, but only if everything in it
    /// is the manifest or a table folder of a previous run (nothing else is ever deleted).
    /// An existing run directory (to resume it, or to add a shard's parts).
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        if !root.is_dir() {
            return Err(StoreError::RunDir {
                path: root.to_path_buf(),
                msg: "is not a run directory".into(),
            });
        }
        Ok(RunDir {
            root: root.to_path_buf(),
        })
    }

    pub fn create(root: &Path, overwrite: bool) -> Result<Self, StoreError> {
        let err = |msg: String| StoreError::RunDir {
            path: root.to_path_buf(),
            msg,
        };
        if root.exists() {
            if !root.is_dir() {
                return Err(err("exists and is not a directory".into()));
            }
            let mut entries = Vec::new();
            for e in std::fs::read_dir(root).map_err(|e| StoreError::io(root, e))? {
                entries.push(e.map_err(|e| StoreError::io(root, e))?);
            }
            if !entries.is_empty() {
                if !overwrite {
                    return Err(err(
                        "already exists and is not empty; set output.overwrite: true to replace \
                         it, or choose another output.dir"
                            .into(),
                    ));
                }
                for e in &entries {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let is_dir = e
                        .file_type()
                        .map_err(|x| StoreError::io(e.path(), x))?
                        .is_dir();
                    let ours = if is_dir {
                        ALL_TABLES.iter().any(|t| t.name == name)
                            || name == SHARDS_DIR
                            || super::stage::is_staging_name(&name)
                    } else {
                        // and the manifest's temporary files (manifest::write_json_atomic)
                        name == MANIFEST
                            || name == format!("{MANIFEST}.tmp")
                            || (name.starts_with(&format!(".{MANIFEST}."))
                                && name.ends_with(".tmp"))
                    };
                    if !ours {
                        return Err(err(format!(
                            "not replaced: `{name}` is not part of a tokenlens run (only \
                             {MANIFEST}, {SHARDS_DIR}/ and table folders are); remove it or choose another \
                             output.dir"
                        )));
                    }
                }
                for e in entries {
                    let p = e.path();
                    let r = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                    r.map_err(|x| StoreError::io(&p, x))?;
                }
            }
        } else {
            std::fs::create_dir_all(root).map_err(|e| StoreError::io(root, e))?;
        }
        Ok(RunDir {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `RUN_DIR/<table>`.
    pub fn table_dir(&self, def: &TableDef) -> PathBuf {
        self.root.join(def.name)
    }

    /// Removes what a killed writer of `shard` left in the table folders: its temporary files,
    /// and its parts numbered `from_seq` or higher (parts of an unfinished window).
    pub fn remove_parts_from(&self, shard: u32, from_seq: u64) -> Result<(), StoreError> {
        let prefix = format!("part-{shard:03}-");
        let tmp_prefix = format!(".{prefix}");
        for def in ALL_TABLES {
            let dir = self.table_dir(def);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries {
                let e = e.map_err(|x| StoreError::io(&dir, x))?;
                let name = e.file_name().to_string_lossy().into_owned();
                let stale = if name.starts_with(&tmp_prefix) {
                    true
                } else if let Some(rest) = name.strip_prefix(&prefix) {
                    let seq: u64 = rest
                        .trim_end_matches(".parquet")
                        .parse()
                        .unwrap_or(u64::MAX);
                    seq >= from_seq
                } else {
                    false
                };
                if stale {
                    std::fs::remove_file(e.path()).map_err(|x| StoreError::io(e.path(), x))?;
                }
            }
        }
        Ok(())
    }
}
