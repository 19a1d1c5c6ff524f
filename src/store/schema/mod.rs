//! The tables a run writes: one definition per table ([`TableDef`]: name, columns with type,
//! nullability and doc) from which the Arrow schema, the typed row struct, the row-batch builder
//! and docs/schema.md are all derived, so they cannot disagree.
//!
//! Each `table!` below generates, for a table `foo`:
//! - `FOO: TableDef`, the definition;
//! - `FooRow`, one row with a field per column (strings and lists borrowed);
//! - `Foo`, a [`Table`]: a column builder that appends `FooRow`s and yields `RecordBatch`es.
//!
//! This file holds what every table is made of (column types, [`TableDef`], the [`Table`]
//! builder trait); `macros.rs` the `table!` macro; `tables.rs` the definitions themselves.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float16Builder, Float32Builder, Float64Builder, Int8Builder, Int32Builder,
    Int64Builder, ListBuilder, StringBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

/// A column's type. Integers are signed (every reader handles them; ids and positions fit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    Utf8,
    Bool,
    Int8,
    Int32,
    Int64,
    Float32,
    Float64,
    /// A list of float32.
    ListFloat32,
    /// A list of float32, or of float16 when the table is built with [`Precision::F16`].
    ListFloat,
}

/// Element type of [`ColType::ListFloat`] columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    F16,
}

/// Per-run choices that change a table's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableOptions {
    /// Element type of `ListFloat` columns (activations' `values`).
    pub list_float: Precision,
}

impl ColType {
    /// The Arrow type, given the run's options.
    pub fn arrow(self, opts: &TableOptions) -> DataType {
        let list = |t: DataType| DataType::List(Arc::new(Field::new_list_field(t, true)));
        match self {
            ColType::Utf8 => DataType::Utf8,
            ColType::Bool => DataType::Boolean,
            ColType::Int8 => DataType::Int8,
            ColType::Int32 => DataType::Int32,
            ColType::Int64 => DataType::Int64,
            ColType::Float32 => DataType::Float32,
            ColType::Float64 => DataType::Float64,
            ColType::ListFloat32 => list(DataType::Float32),
            ColType::ListFloat => list(match opts.list_float {
                Precision::F32 => DataType::Float32,
                Precision::F16 => DataType::Float16,
            }),
        }
    }

    /// The name used in docs/schema.md.
    pub fn doc_name(self) -> &'static str {
        match self {
            ColType::Utf8 => "string",
            ColType::Bool => "bool",
            ColType::Int8 => "int8",
            ColType::Int32 => "int32",
            ColType::Int64 => "int64",
            ColType::Float32 => "float32",
            ColType::Float64 => "float64",
            ColType::ListFloat32 => "list<float32>",
            ColType::ListFloat => "list<float32> or list<float16>",
        }
    }
}

/// One column of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColType,
    pub nullable: bool,
    pub doc: &'static str,
}

/// One table: its folder name under the run directory, what a row is, and its columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableDef {
    pub name: &'static str,
    pub doc: &'static str,
    pub columns: &'static [Column],
}

impl TableDef {
    /// The Arrow schema; each field carries its doc as `description` metadata, so the
    /// documentation travels with the Parquet files.
    pub fn schema(&self, opts: &TableOptions) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|c| {
                    Field::new(c.name, c.ty.arrow(opts), c.nullable).with_metadata(HashMap::from([
                        ("description".to_string(), doc_text(c.doc)),
                    ]))
                })
                .collect::<Vec<_>>(),
        ))
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// A doc comment's lines as one paragraph-preserving text: lines joined by spaces, blank lines
/// kept as paragraph breaks.
pub fn doc_text(doc: &str) -> String {
    doc.split("\n\n")
        .map(|para| para.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// A table's row builder: appends typed rows, column by column, and hands them out as a
/// `RecordBatch` (which resets it).
pub trait Table {
    /// One row; strings and lists are borrowed.
    type Row<'r>;
    fn def() -> &'static TableDef;
    fn new(opts: &TableOptions) -> Self;
    fn append(&mut self, row: Self::Row<'_>);
    /// Rows appended since the last `finish`.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Approximate bytes of the appended rows (values, offsets, no overhead).
    fn bytes(&self) -> usize;
    /// The appended rows as a batch with `schema()`; the builder starts over empty.
    fn finish(&mut self) -> RecordBatch;
    fn schema(&self) -> SchemaRef;
}

/// Appends one cell to a column builder; returns its approximate size in bytes.
pub trait Push<T> {
    fn push(&mut self, v: T) -> usize;
}

impl Push<&str> for StringBuilder {
    fn push(&mut self, v: &str) -> usize {
        self.append_value(v);
        v.len() + 4
    }
}

macro_rules! push_primitive {
    ($($b:ty: $t:ty),*) => {$(
        impl Push<$t> for $b {
            fn push(&mut self, v: $t) -> usize {
                self.append_value(v);
                size_of::<$t>()
            }
        }
    )*};
}
push_primitive!(BooleanBuilder: bool, Int8Builder: i8, Int32Builder: i32, Int64Builder: i64,
    Float32Builder: f32, Float64Builder: f64);

impl Push<Option<f32>> for Float32Builder {
    fn push(&mut self, v: Option<f32>) -> usize {
        self.append_option(v);
        4
    }
}

impl Push<Option<bool>> for BooleanBuilder {
    fn push(&mut self, v: Option<bool>) -> usize {
        self.append_option(v);
        1
    }
}

impl Push<Option<i64>> for Int64Builder {
    fn push(&mut self, v: Option<i64>) -> usize {
        self.append_option(v);
        8
    }
}

impl Push<Option<f64>> for Float64Builder {
    fn push(&mut self, v: Option<f64>) -> usize {
        self.append_option(v);
        8
    }
}

impl Push<Option<i32>> for Int32Builder {
    fn push(&mut self, v: Option<i32>) -> usize {
        self.append_option(v);
        4
    }
}

impl Push<Option<&str>> for StringBuilder {
    fn push(&mut self, v: Option<&str>) -> usize {
        self.append_option(v);
        v.map_or(0, str::len) + 4
    }
}

impl Push<&[f32]> for ListBuilder<Float32Builder> {
    fn push(&mut self, v: &[f32]) -> usize {
        self.values().append_slice(v);
        self.append(true);
        4 * v.len() + 4
    }
}

/// Builder of a `ListFloat` column: float32 or float16 lists.
#[derive(Debug)]
pub enum FloatListBuilder {
    F32(ListBuilder<Float32Builder>),
    F16(ListBuilder<Float16Builder>),
}

impl FloatListBuilder {
    pub fn new(p: Precision) -> Self {
        match p {
            Precision::F32 => FloatListBuilder::F32(ListBuilder::new(Float32Builder::new())),
            Precision::F16 => FloatListBuilder::F16(ListBuilder::new(Float16Builder::new())),
        }
    }
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            FloatListBuilder::F32(b) => Arc::new(b.finish()),
            FloatListBuilder::F16(b) => Arc::new(b.finish()),
        }
    }
}

impl Push<&[f32]> for FloatListBuilder {
    fn push(&mut self, v: &[f32]) -> usize {
        match self {
            FloatListBuilder::F32(b) => b.push(v),
            FloatListBuilder::F16(b) => {
                let values = b.values();
                for &x in v {
                    values.append_value(half::f16::from_f32(x));
                }
                b.append(true);
                2 * v.len() + 4
            }
        }
    }
}

#[macro_use]
mod macros;
mod tables;

pub use tables::*;

/// Every table, in the order of docs/schema.md.
pub static ALL_TABLES: &[&TableDef] = &[
    &TOKENS,
    &GENERATIONS,
    &PAIRS,
    &PREDICTIONS,
    &LENS,
    &LENS_TOPK,
    &WATCH,
    &SALIENCY,
    &SALIENCY_COMPLETENESS,
    &PATCHING,
    &INTERVENTIONS,
    &INTERVENTION_TOKENS,
    &INTERVENTION_EDITS,
    &ACTIVATIONS,
    &RESIDUALS,
    &ATTENTION,
    &ATTENTION_ROLLOUT,
    &NMF_COMPONENTS,
    &NMF_FACTORS,
    &NMF_SUMMARY,
    &NMF_TOP_CONTEXTS,
    &NEURON_TOP_CONTEXTS,
    &NEURON_STATS,
    &DIFF,
    &DIFF_DOCS,
    &SIMILARITY,
];

/// The tables `tokenlens compare` writes into a comparison directory.
pub static COMPARISON_TABLES: &[&TableDef] = &[&DIFF, &DIFF_DOCS, &SIMILARITY];

/// The comparison tables a run may also hold: `similarity` (`analyses.similarity`, the run's
/// own layers). The other comparison tables are never a run's.
pub static RUN_AND_COMPARISON_TABLES: &[&TableDef] = &[&SIMILARITY];

/// Whether `tokenlens compare` writes the table into a comparison directory.
pub fn is_comparison_table(def: &TableDef) -> bool {
    COMPARISON_TABLES.iter().any(|t| t.name == def.name)
}

/// Whether a run directory may hold the table: every table but the comparison-only ones.
pub fn is_run_table(def: &TableDef) -> bool {
    !is_comparison_table(def) || RUN_AND_COMPARISON_TABLES.iter().any(|t| t.name == def.name)
}

/// The definition of a table by name.
pub fn table_def(name: &str) -> Option<&'static TableDef> {
    ALL_TABLES.iter().copied().find(|t| t.name == name)
}
