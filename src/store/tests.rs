//! Every table written through its typed builder and read back with the parquet crate's Arrow
//! reader: schema (types, nullability, docs), values, row groups, parts, crash safety.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float16Type, Float32Type, Float64Type, Int8Type, Int32Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::reader::{FileReader, SerializedFileReader};

use super::schema::*;
use super::writer::*;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir()
        .join(format!("tokenlens-store-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes `rows` to a fresh run and returns the summary and every batch read back (all parts).
fn roundtrip<'a, T: Table>(
    name: &str,
    rows: impl IntoIterator<Item = T::Row<'a>>,
    table_opts: &TableOptions,
    opts: &WriterOptions,
) -> (TableSummary, RecordBatch) {
    let run = RunDir::create(&scratch(name).join("run"), false).unwrap();
    let mut w = TableWriter::<T>::create(&run, table_opts, opts).unwrap();
    for r in rows {
        w.append(r).unwrap();
    }
    let summary = w.finish().unwrap();
    let expected = T::def().schema(table_opts);
    let mut batches = Vec::new();
    for part in &summary.parts {
        assert!(part.path.starts_with(run.table_dir(T::def())));
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&part.path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for b in reader {
            let b = b.unwrap();
            // Same fields, types, nullability and metadata as the definition.
            assert_eq!(b.schema(), expected, "{}", T::def().name);
            batches.push(b);
        }
    }
    let all = concat_batches(&expected, &batches);
    assert_eq!(all.num_rows() as u64, summary.rows);
    (summary, all)
}

/// All batches as one.
fn concat_batches(schema: &arrow_schema::SchemaRef, batches: &[RecordBatch]) -> RecordBatch {
    if batches.is_empty() {
        return RecordBatch::new_empty(schema.clone());
    }
    let columns = (0..schema.fields().len())
        .map(|i| {
            let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
            arrow_select::concat::concat(&arrays).unwrap()
        })
        .collect();
    RecordBatch::try_new(schema.clone(), columns).unwrap()
}

fn strings(b: &RecordBatch, col: &str) -> Vec<String> {
    b.column_by_name(col)
        .unwrap()
        .as_string::<i32>()
        .iter()
        .map(|s| s.unwrap().to_string())
        .collect()
}

fn i32s(b: &RecordBatch, col: &str) -> Vec<i32> {
    b.column_by_name(col)
        .unwrap()
        .as_primitive::<Int32Type>()
        .values()
        .to_vec()
}

fn f32s(b: &RecordBatch, col: &str) -> Vec<f32> {
    b.column_by_name(col)
        .unwrap()
        .as_primitive::<Float32Type>()
        .values()
        .to_vec()
}

fn lists(b: &RecordBatch, col: &str) -> Vec<Vec<f32>> {
    let l = b.column_by_name(col).unwrap().as_list::<i32>();
    (0..l.len())
        .map(|i| {
            let v = l.value(i);
            match v.data_type() {
                DataType::Float32 => v.as_primitive::<Float32Type>().values().to_vec(),
                DataType::Float16 => v
                    .as_primitive::<Float16Type>()
                    .values()
                    .iter()
                    .map(|x| x.to_f32())
                    .collect(),
                t => panic!("list of {t}"),
            }
        })
        .collect()
}

fn opts() -> (TableOptions, WriterOptions) {
    (TableOptions::default(), WriterOptions::default())
}

#[test]
fn tokens_and_generations() {
    let (to, wo) = opts();
    let toks = ["The", " cat", " sat"];
    let (s, b) = roundtrip::<Tokens>(
        "tokens",
        toks.iter().enumerate().map(|(i, t)| TokensRow {
            doc_id: "q1",
            position: i as i32,
            token_id: 100 + i as i32,
            token: t,
            is_generated: i == 2,
        }),
        &to,
        &wo,
    );
    assert_eq!(s.table, "tokens");
    assert_eq!(s.rows, 3);
    assert_eq!(s.parts.len(), 1);
    assert!(s.parts[0].path.ends_with("tokens/part-000-00000.parquet"));
    assert_eq!(strings(&b, "doc_id"), ["q1"; 3]);
    assert_eq!(i32s(&b, "position"), [0, 1, 2]);
    assert_eq!(i32s(&b, "token_id"), [100, 101, 102]);
    assert_eq!(strings(&b, "token"), toks);
    let gen_col = b.column_by_name("is_generated").unwrap().as_boolean();
    assert_eq!(
        gen_col.iter().map(Option::unwrap).collect::<Vec<_>>(),
        [false, false, true]
    );

    let (_, b) = roundtrip::<Generations>(
        "generations",
        [GenerationsRow {
            doc_id: "q1",
            index: 7,
            prompt: "The cat",
            output_text: " sat",
            prompt_tokens: 2,
            generated_tokens: 1,
            stopped_at_eos: false,
            truncated_tokens: 0,
        }],
        &to,
        &wo,
    );
    let index = b
        .column_by_name("index")
        .unwrap()
        .as_primitive::<Int64Type>();
    assert_eq!(index.value(0), 7);
    assert_eq!(strings(&b, "output_text"), [" sat"]);
    assert_eq!(i32s(&b, "truncated_tokens"), [0]);
}

#[test]
fn predictions_lens_and_watch() {
    let (to, wo) = opts();
    let (_, b) = roundtrip::<Predictions>(
        "predictions",
        (1..=3).map(|rank| PredictionsRow {
            doc_id: "d",
            position: 4,
            rank,
            token_id: rank * 10,
            token: " Paris",
            prob: 1.0 / rank as f32,
        }),
        &to,
        &wo,
    );
    assert_eq!(i32s(&b, "rank"), [1, 2, 3]);
    assert_eq!(f32s(&b, "prob"), [1.0, 0.5, 1.0 / 3.0]);

    let (_, b) = roundtrip::<Lens>(
        "lens",
        (0..4).map(|layer| LensRow {
            doc_id: "d",
            position: 0,
            layer,
            token_id: 5,
            rank: 40 - 10 * layer,
            prob: 0.25 * layer as f32,
        }),
        &to,
        &wo,
    );
    assert_eq!(i32s(&b, "layer"), [0, 1, 2, 3]);
    assert_eq!(i32s(&b, "rank"), [40, 30, 20, 10]);

    let (_, b) = roundtrip::<LensTopk>(
        "lens_topk",
        [LensTopkRow {
            doc_id: "d",
            position: 1,
            layer: 2,
            rank: 1,
            token_id: 9,
            token: "\n",
            prob: 0.5,
        }],
        &to,
        &wo,
    );
    assert_eq!(strings(&b, "token"), ["\n"]);

    let (_, b) = roundtrip::<Watch>(
        "watch",
        [" Paris", " London"].iter().map(|t| WatchRow {
            doc_id: "d",
            position: 3,
            layer: 30,
            token_id: 1,
            token: t,
            rank: 2,
            prob: 0.1,
        }),
        &to,
        &wo,
    );
    assert_eq!(strings(&b, "token"), [" Paris", " London"]);
}

#[test]
fn saliency_tables_with_nullable_signed() {
    let (to, wo) = opts();
    let rows = [
        ("gradient", None),
        ("grad_x_input", Some(-0.5f32)),
        ("integrated_gradients", Some(0.25)),
    ];
    let (_, b) = roundtrip::<Saliency>(
        "saliency",
        rows.iter().map(|&(method, signed)| SaliencyRow {
            doc_id: "d",
            method,
            metric: "prob",
            target_position: 5,
            source_position: 2,
            score: 0.3,
            raw: 1.5,
            signed,
        }),
        &to,
        &wo,
    );
    let signed = b
        .column_by_name("signed")
        .unwrap()
        .as_primitive::<Float32Type>();
    assert_eq!(
        signed.iter().collect::<Vec<_>>(),
        [None, Some(-0.5), Some(0.25)]
    );
    assert_eq!(signed.null_count(), 1);
    assert!(b.schema().field_with_name("signed").unwrap().is_nullable());
    assert!(!b.schema().field_with_name("score").unwrap().is_nullable());

    let (_, b) = roundtrip::<SaliencyCompleteness>(
        "completeness",
        [SaliencyCompletenessRow {
            doc_id: "d",
            target_position: 5,
            metric: "prob",
            baseline: "zero",
            value: 0.77,
            baseline_value: 1e-5,
            attribution_sum: 0.7,
            error: 0.7 - (0.77 - 1e-5),
            steps: 16,
        }],
        &to,
        &wo,
    );
    assert_eq!(f32s(&b, "value"), [0.77]);
}

#[test]
fn activations_in_f32_and_f16() {
    let values: Vec<Vec<f32>> = (0..3)
        .map(|l| {
            (0..64)
                .map(|i| (i as f32 - 32.0) * 0.125 + l as f32)
                .collect()
        })
        .collect();
    let rows = || {
        values.iter().enumerate().map(|(l, v)| ActivationsRow {
            doc_id: "d",
            position: 0,
            layer: l as i32,
            values: v,
        })
    };
    let wo = WriterOptions::default();
    let (_, b) = roundtrip::<Activations>("act32", rows(), &TableOptions::default(), &wo);
    assert_eq!(lists(&b, "values"), values);

    let half = TableOptions {
        list_float: Precision::F16,
    };
    let (s16, b) = roundtrip::<Activations>("act16", rows(), &half, &wo);
    let DataType::List(item) = b
        .schema()
        .field_with_name("values")
        .unwrap()
        .data_type()
        .clone()
    else {
        panic!("values is not a list")
    };
    assert_eq!(item.data_type(), &DataType::Float16);
    // Multiples of 1/8 below 2^11 are exact in f16.
    assert_eq!(lists(&b, "values"), values);
    assert!(s16.parts[0].rows == 3);
    // Float columns are written without a dictionary (their values are almost all distinct);
    // strings and integers keep it.
    let r = SerializedFileReader::new(File::open(&s16.parts[0].path).unwrap()).unwrap();
    let rg = r.metadata().row_group(0);
    let dictionary = |name: &str| {
        let c = (0..rg.num_columns())
            .map(|i| rg.column(i))
            .find(|c| c.column_path().string().starts_with(name))
            .unwrap_or_else(|| panic!("no column {name}"));
        c.dictionary_page_offset().is_some()
    };
    assert!(!dictionary("values"), "the f16 values have a dictionary");
    assert!(dictionary("doc_id"), "the doc ids have no dictionary");
    assert!(dictionary("layer"), "the layers have no dictionary");
}

#[test]
fn attention_and_rollout_lists() {
    let (to, wo) = opts();
    let weights: Vec<Vec<f32>> = (0..4).map(|q| vec![1.0 / (q + 1) as f32; q + 1]).collect();
    let (_, b) = roundtrip::<Attention>(
        "attention",
        weights.iter().enumerate().map(|(q, w)| AttentionRow {
            doc_id: "d",
            layer: 1,
            head: 2,
            query_position: q as i32,
            weights: w,
        }),
        &to,
        &wo,
    );
    assert_eq!(lists(&b, "weights"), weights);
    let (_, b) = roundtrip::<AttentionRollout>(
        "rollout",
        [AttentionRolloutRow {
            doc_id: "d",
            layer: 0,
            query_position: 1,
            weights: &[0.75, 0.25],
        }],
        &to,
        &wo,
    );
    assert_eq!(lists(&b, "weights"), [vec![0.75, 0.25]]);
}

#[test]
fn nmf_tables() {
    let (to, wo) = opts();
    let (_, b) = roundtrip::<NmfComponents>(
        "nmf_components",
        [1i8, -1].iter().map(|&sign| NmfComponentsRow {
            factor: 0,
            layer: 3,
            neuron: 17,
            sign,
            weight: 0.5,
        }),
        &to,
        &wo,
    );
    let sign = b.column_by_name("sign").unwrap().as_primitive::<Int8Type>();
    assert_eq!(sign.values().to_vec(), [1, -1]);

    let (_, b) = roundtrip::<NmfFactors>(
        "nmf_factors",
        [NmfFactorsRow {
            doc_id: "d",
            position: 2,
            factor: 1,
            value: 3.5,
        }],
        &to,
        &wo,
    );
    assert_eq!(f32s(&b, "value"), [3.5]);

    let (_, b) = roundtrip::<NmfSummary>(
        "nmf_summary",
        (1..=3).map(|i| NmfSummaryRow {
            iteration: i,
            relative_error: 1.0 / i as f64,
            seconds: 0.01 * i as f64,
        }),
        &to,
        &wo,
    );
    let err = b
        .column_by_name("relative_error")
        .unwrap()
        .as_primitive::<Float64Type>();
    assert_eq!(err.values().to_vec(), [1.0, 0.5, 1.0 / 3.0]);

    let (_, b) = roundtrip::<NmfTopContexts>(
        "nmf_top_contexts",
        [NmfTopContextsRow {
            factor: 0,
            rank: 1,
            doc_id: "d",
            position: 4,
            value: 9.0,
            context: "The capital of France is",
        }],
        &to,
        &wo,
    );
    assert_eq!(strings(&b, "context"), ["The capital of France is"]);
}

#[test]
fn all_tables_are_registered_and_unique() {
    let names: Vec<&str> = ALL_TABLES.iter().map(|t| t.name).collect();
    for (i, n) in names.iter().enumerate() {
        assert!(!names[..i].contains(n), "table {n} twice");
    }
    for def in [
        Tokens::def(),
        Generations::def(),
        Predictions::def(),
        Lens::def(),
        LensTopk::def(),
        Watch::def(),
        Saliency::def(),
        SaliencyCompleteness::def(),
        Activations::def(),
        Attention::def(),
        AttentionRollout::def(),
        NmfComponents::def(),
        NmfFactors::def(),
        NmfSummary::def(),
        NmfTopContexts::def(),
        Pairs::def(),
        Patching::def(),
        Interventions::def(),
        InterventionTokens::def(),
        InterventionEdits::def(),
        Diff::def(),
        DiffDocs::def(),
        NeuronTopContexts::def(),
        NeuronStats::def(),
    ] {
        assert_eq!(table_def(def.name), Some(def));
    }
    assert_eq!(ALL_TABLES.len(), 26);
    // The comparison tables are the last ones, and only they are written outside a run.
    let comparison: Vec<&str> = ALL_TABLES
        .iter()
        .filter(|t| is_comparison_table(t))
        .map(|t| t.name)
        .collect();
    assert_eq!(comparison, ["diff", "diff_docs", "similarity"]);
    assert_eq!(COMPARISON_TABLES.len(), comparison.len());
    // Of them only `similarity` is also a run's (`analyses.similarity`).
    let both: Vec<&str> = ALL_TABLES
        .iter()
        .filter(|t| is_comparison_table(t) && is_run_table(t))
        .map(|t| t.name)
        .collect();
    assert_eq!(both, ["similarity"]);
    assert_eq!(ALL_TABLES.iter().filter(|t| is_run_table(t)).count(), 24);
    // Every table with documents joins on doc_id, a non-null string.
    for t in ALL_TABLES {
        if let Some(c) = t.column("doc_id") {
            assert_eq!((c.ty, c.nullable), (ColType::Utf8, false));
        } else {
            // Corpus-level tables: NMF's, the neurons' statistics, the run's resolved
            // intervention edits, and layer similarity.
            assert!(
                t.name.starts_with("nmf_")
                    || t.name == "neuron_stats"
                    || t.name == "intervention_edits"
                    || t.name == "similarity",
                "{} has no doc_id",
                t.name
            );
        }
    }
}

fn row_groups(path: &Path) -> (usize, Compression) {
    let r = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
    let md = r.metadata();
    (md.num_row_groups(), md.row_group(0).column(0).compression())
}

#[test]
fn row_groups_and_parts_roll_at_their_limits() {
    let to = TableOptions::default();
    let wo = WriterOptions {
        batch_rows: 100,
        row_group_rows: 250,
        ..WriterOptions::default()
    };
    let n = 1000;
    let row = |i: i32| NmfFactorsRow {
        doc_id: "d",
        position: i,
        factor: 0,
        value: i as f32,
    };
    let (s, b) = roundtrip::<NmfFactors>("row-groups", (0..n).map(row), &to, &wo);
    assert_eq!(s.parts.len(), 1);
    assert_eq!(s.parts[0].row_groups, 4);
    assert_eq!(
        row_groups(&s.parts[0].path),
        (4, Compression::ZSTD(Default::default()))
    );
    assert_eq!(i32s(&b, "position"), (0..n).collect::<Vec<_>>());

    // Tiny parts: a new part after every flushed batch.
    let wo = WriterOptions {
        batch_rows: 300,
        part_bytes: 1,
        shard: 7,
        ..WriterOptions::default()
    };
    let (s, b) = roundtrip::<NmfFactors>("parts", (0..n).map(row), &to, &wo);
    let names: Vec<String> = s
        .parts
        .iter()
        .map(|p| p.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "part-007-00000.parquet",
            "part-007-00001.parquet",
            "part-007-00002.parquet",
            "part-007-00003.parquet"
        ]
    );
    assert_eq!(
        s.parts.iter().map(|p| p.rows).collect::<Vec<_>>(),
        [300, 300, 300, 100]
    );
    assert_eq!(i32s(&b, "position"), (0..n).collect::<Vec<_>>());
}

#[test]
fn a_table_without_rows_still_has_its_schema() {
    let (to, wo) = opts();
    let (s, b) = roundtrip::<Saliency>("empty", [], &to, &wo);
    assert_eq!(s.rows, 0);
    assert_eq!(s.parts.len(), 1);
    assert_eq!(b.num_rows(), 0);
}

/// Parts appear only when complete: before `finish` there is a hidden temporary file only; a
/// writer dropped unfinished (a failed run) leaves nothing.
#[test]
fn parts_are_renamed_when_complete() {
    let dir = scratch("crash");
    let (to, wo) = opts();
    let schema = SaliencyCompleteness::def().schema(&to);
    let listing = || {
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let mut b = SaliencyCompleteness::new(&to);
    b.append(SaliencyCompletenessRow {
        doc_id: "d",
        target_position: 1,
        metric: "prob",
        baseline: "zero",
        value: 0.5,
        baseline_value: 0.0,
        attribution_sum: 0.5,
        error: 0.0,
        steps: 50,
    });
    let batch = b.finish();

    let mut p = PartWriter::create(&dir, 0, 0, schema.clone(), &wo).unwrap();
    p.write(&batch).unwrap();
    assert_eq!(listing(), [".part-000-00000.parquet.tmp"]);
    let info = p.finish().unwrap();
    assert_eq!(listing(), ["part-000-00000.parquet"]);
    assert_eq!(info.rows, 1);
    assert_eq!(info.bytes, std::fs::metadata(&info.path).unwrap().len());

    let mut p = PartWriter::create(&dir, 0, 1, schema.clone(), &wo).unwrap();
    p.write(&batch).unwrap();
    drop(p);
    assert_eq!(listing(), ["part-000-00000.parquet"]);

    // An existing part is never overwritten.
    let e = PartWriter::create(&dir, 0, 0, schema, &wo).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("part-000-00000.parquet: already exists"),
        "{e}"
    );
}

#[test]
fn run_dir_overwrite_rules() {
    let base = scratch("rundir");
    let root = base.join("run");
    let run = RunDir::create(&root, false).unwrap();
    let manifest = serde_json::json!({"tables": ["tokens"]});
    let m = crate::store::Manifest::path(&root);
    crate::store::manifest::write_json_atomic(&m, &manifest).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&m).unwrap()).unwrap(),
        manifest
    );
    let w =
        TableWriter::<Tokens>::create(&run, &TableOptions::default(), &WriterOptions::default())
            .unwrap();
    w.finish().unwrap();

    let e = RunDir::create(&root, false).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}: already exists and is not empty; set output.overwrite: true to replace it, or \
             choose another output.dir",
            root.display()
        )
    );
    // A previous run is replaced.
    RunDir::create(&root, true).unwrap();
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);

    // Anything that is not ours is never deleted.
    std::fs::write(root.join("notes.txt"), "keep me").unwrap();
    let e = RunDir::create(&root, true).unwrap_err().to_string();
    assert!(
        e.ends_with("not replaced: `notes.txt` is not part of a tokenlens run (only manifest.json, shards/ and table folders are); remove it or choose another output.dir"),
        "{e}"
    );
    assert!(root.join("notes.txt").exists());

    std::fs::write(base.join("file"), "").unwrap();
    let e = RunDir::create(&base.join("file"), true)
        .unwrap_err()
        .to_string();
    assert!(e.ends_with("file: exists and is not a directory"), "{e}");
}

/// Column docs travel in the Parquet files' Arrow schema.
#[test]
fn field_descriptions_are_stored() {
    let (to, wo) = opts();
    let (s, _) = roundtrip::<Tokens>("descriptions", [], &to, &wo);
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(File::open(&s.parts[0].path).unwrap()).unwrap();
    let schema = reader.schema();
    let f = schema.field_with_name("is_generated").unwrap();
    assert_eq!(
        f.metadata().get("description").map(String::as_str),
        Some("Whether the model generated this token (false: part of the prompt).")
    );
}
