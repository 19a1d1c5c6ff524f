use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;

use super::*;

/// A fresh directory per call (tests run in parallel).
fn dir(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir()
        .join(format!("tokenlens-dataset-{}", std::process::id()))
        .join(format!("{name}-{}", N.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(name: &str, bytes: &[u8]) -> DatasetSpec {
    let d = dir(name.split('.').next().unwrap());
    let p = d.join(name);
    std::fs::write(&p, bytes).unwrap();
    DatasetSpec::new(p)
}

fn read(spec: &DatasetSpec) -> Result<Vec<(String, String)>, String> {
    open(spec)
        .map_err(|e| e.to_string())?
        .map(|p| p.map(|p| (p.doc_id, p.text)).map_err(|e| e.to_string()))
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The error message with the temp directory replaced by `DIR`.
fn read_err(spec: &DatasetSpec) -> String {
    let e = read(spec).unwrap_err();
    e.replace(spec.path.parent().unwrap().to_str().unwrap(), "DIR")
}

#[test]
fn formats_from_extensions() {
    let f = |p: &str| Format::from_path(Path::new(p));
    assert_eq!(f("a/b.jsonl"), Some(Format::Jsonl));
    assert_eq!(f("b.NDJSON"), Some(Format::Jsonl));
    assert_eq!(f("b.csv"), Some(Format::Csv));
    assert_eq!(f("b.pq"), Some(Format::Parquet));
    assert_eq!(f("b.parquet"), Some(Format::Parquet));
    assert_eq!(f("b.txt"), Some(Format::Txt));
    assert_eq!(f("b.json"), None);
    assert_eq!(f("b"), None);
}

#[test]
fn jsonl_with_and_without_ids() {
    let mut spec = write(
        "a.jsonl",
        b"\xEF\xBB\xBF{\"id\": \"q1\", \"text\": \"Hello\", \"extra\": [1]}\r\n\n  \n{\"id\": 7, \"text\": \"caf\xC3\xA9 \\\"x\\\"\"}\n{\"id\": \"q3\", \"text\": \" spaced \"}",
    );
    assert_eq!(
        read(&spec).unwrap(),
        pairs(&[("0", "Hello"), ("1", "café \"x\""), ("2", " spaced ")])
    );
    spec.id_field = Some("id".into());
    assert_eq!(
        read(&spec).unwrap(),
        pairs(&[("q1", "Hello"), ("7", "café \"x\""), ("q3", " spaced ")])
    );
    let locations: Vec<Location> = open(&spec).unwrap().map(|p| p.unwrap().location).collect();
    assert_eq!(
        locations,
        [Location::line(1), Location::line(4), Location::line(5)]
    );
    spec.limit = Some(2);
    assert_eq!(read(&spec).unwrap().len(), 2);
    let indices: Vec<u64> = open(&spec).unwrap().map(|p| p.unwrap().index).collect();
    assert_eq!(indices, [0, 1]);
}

#[test]
fn jsonl_errors_name_file_and_line() {
    let cases: &[(&[u8], &str)] = &[
        (
            b"{\"text\": \"a\"}\n{\"prompt\": \"b\", \"id\": 1}\n",
            "DIR/e.jsonl:2: no field `text` (fields: id, prompt)",
        ),
        (
            b"{\"text\": \"a\"}\n\n{\"text\": 3}\n",
            "DIR/e.jsonl:3: field `text` is a number, expected a string",
        ),
        (
            b"{\"text\": null}\n",
            "DIR/e.jsonl:1: field `text` is null, expected a string",
        ),
        (
            b"{\"text\": \"\"}\n",
            "DIR/e.jsonl:1: field `text` is empty",
        ),
        (
            b"{\"text\": \"a\"}\n{\"text\": \"b\",}\n",
            "DIR/e.jsonl:2:14: invalid JSON: trailing comma",
        ),
        (
            b"{\"text\": \"a\"\n",
            "DIR/e.jsonl:1:12: invalid JSON: EOF while parsing an object",
        ),
        (
            b"[\"a\"]\n",
            "DIR/e.jsonl:1: expected a JSON object, found an array",
        ),
        (
            b"{\"text\": \"ok\"}\n{\"text\": \"caf\xE9\"}\n",
            "DIR/e.jsonl:2:14: invalid UTF-8 (the file must be UTF-8 encoded)",
        ),
        (b"\n\n", "DIR/e.jsonl: the dataset has no prompts"),
        (b"", "DIR/e.jsonl: the dataset has no prompts"),
    ];
    for (bytes, expected) in cases {
        assert_eq!(&read_err(&write("e.jsonl", bytes)), expected);
    }
    let mut spec = write(
        "e.jsonl",
        b"{\"text\": \"a\", \"id\": \"x\"}\n{\"text\": \"b\", \"id\": 1.5}\n",
    );
    spec.id_field = Some("id".into());
    assert_eq!(
        read_err(&spec),
        "DIR/e.jsonl:2: field `id` is a non-integer number, expected a string or an integer"
    );
    // The error ends the stream; the good record before it was yielded.
    let items: Vec<_> = open(&spec).unwrap().collect();
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok() && items[1].is_err());
}

#[test]
fn missing_file_and_unknown_format() {
    let spec = DatasetSpec::new("/no/such/prompts.jsonl");
    // The cause is the error's source; the CLI prints the chain.
    assert_eq!(
        format!("{:#}", anyhow::Error::from(open(&spec).unwrap_err())),
        "/no/such/prompts.jsonl: No such file or directory (os error 2)"
    );
    let spec = DatasetSpec::new("/no/such/prompts.xlsx");
    assert_eq!(
        open(&spec).unwrap_err().to_string(),
        "/no/such/prompts.xlsx: cannot tell the format from the file extension; set \
         dataset.format to jsonl, csv, parquet or txt"
    );
}

#[test]
fn txt_one_prompt_per_line() {
    let spec = write(
        "t.txt",
        b"The capital of France is\r\n\n   \n  Once upon a time\nlast line, no newline",
    );
    assert_eq!(
        read(&spec).unwrap(),
        pairs(&[
            ("0", "The capital of France is"),
            ("1", "  Once upon a time"),
            ("2", "last line, no newline")
        ])
    );
    assert_eq!(
        read_err(&write("t.txt", b"ok\n\xFF\xFEbad\n")),
        "DIR/t.txt:2:1: invalid UTF-8 (the file must be UTF-8 encoded)"
    );
    assert_eq!(
        read_err(&write("t.txt", b"\n \n")),
        "DIR/t.txt: the dataset has no prompts"
    );
}

#[test]
fn csv_by_column_name() {
    let mut spec = write(
        "c.csv",
        b"\xEF\xBB\xBFid,text,lang\nq1,\"Hello, world\",en\nq2,\"two\nlines\",en\n\nq3,\"say \"\"hi\"\"\",en\n",
    );
    spec.id_field = Some("id".into());
    assert_eq!(
        read(&spec).unwrap(),
        pairs(&[
            ("q1", "Hello, world"),
            ("q2", "two\nlines"),
            ("q3", "say \"hi\"")
        ])
    );
    // A record's line is where it starts (q2 spans lines 3-4). The csv crate counts blank
    // lines before a record as its start: q3 is on line 6, reported as 5.
    let locations: Vec<Location> = open(&spec).unwrap().map(|p| p.unwrap().location).collect();
    assert_eq!(
        locations,
        [Location::line(2), Location::line(3), Location::line(5)]
    );
}

#[test]
fn csv_errors_name_file_and_line() {
    let spec = write("c.csv", b"id,prompt\n1,a\n");
    assert_eq!(
        read_err(&spec),
        "DIR/c.csv:1: no column `text` (columns: id, prompt)"
    );
    let spec = write("c.csv", b"id,text\n1,a\n2,b,extra\n");
    assert_eq!(
        read_err(&spec),
        "DIR/c.csv:3: malformed CSV: 3 fields, but the header has 2"
    );
    let spec = write("c.csv", b"id,text\n1,a\n2,\n");
    assert_eq!(read_err(&spec), "DIR/c.csv:3: column `text` is empty");
    let spec = write("c.csv", b"id,text\n1,caf\xE9\n");
    assert_eq!(
        read_err(&spec),
        "DIR/c.csv:2: column `text` is not valid UTF-8 (at byte 4 of the field)"
    );
    let spec = write("c.csv", b"id,text\n");
    assert_eq!(read_err(&spec), "DIR/c.csv: the dataset has no prompts");
    let mut spec = write("c.csv", b"id,text\n1,a\n,b\n");
    spec.id_field = Some("id".into());
    assert_eq!(read_err(&spec), "DIR/c.csv:3: column `id` is empty");
}

fn write_parquet(name: &str, batches: &[RecordBatch]) -> DatasetSpec {
    let d = dir(name.split('.').next().unwrap());
    let p = d.join(name);
    let mut w = ArrowWriter::try_new(File::create(&p).unwrap(), batches[0].schema(), None).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
    DatasetSpec::new(p)
}

#[test]
fn parquet_streams_batches_and_projects() {
    // More rows than a reader batch, and a column that is never read.
    let n = PARQUET_BATCH_ROWS + 10;
    let schema = Arc::new(Schema::new(vec![
        Field::new("score", DataType::Float64, false),
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Float64Array::from(vec![0.5; n])) as ArrayRef,
            Arc::new(Int64Array::from_iter_values((0..n as i64).map(|i| 100 + i))),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("prompt {i}")),
            )),
        ],
    )
    .unwrap();
    let mut spec = write_parquet("p.parquet", &[batch]);
    let all = read(&spec).unwrap();
    assert_eq!(all.len(), n);
    assert_eq!(all[n - 1], ("1033".into(), "prompt 1033".into()));
    spec.id_field = Some("id".into());
    let all = read(&spec).unwrap();
    assert_eq!(all[1030], ("1130".into(), "prompt 1030".into()));
    let last = open(&spec).unwrap().last().unwrap().unwrap();
    assert_eq!(last.location, Location::Row(n as u64 - 1));
    spec.limit = Some(3);
    assert_eq!(read(&spec).unwrap().len(), 3);
}

#[test]
fn parquet_errors_name_file_and_row() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Float64, true),
        Field::new("text", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])) as ArrayRef,
            Arc::new(StringArray::from(vec![Some("a"), Some("b"), None])),
            Arc::new(Int64Array::from(vec![1, 2, 3])),
        ],
    )
    .unwrap();
    let mut spec = write_parquet("q.parquet", &[batch]);
    assert_eq!(read_err(&spec), "DIR/q.parquet: row 2: `text` is null");
    spec.id_field = Some("id".into());
    assert_eq!(
        read_err(&spec),
        "DIR/q.parquet: column `id` has type Float64, expected a string or an integer"
    );
    spec.id_field = None;
    spec.text_field = Some("n".into());
    assert_eq!(
        read_err(&spec),
        "DIR/q.parquet: column `n` has type Int64, expected a string"
    );
    spec.text_field = Some("prompt".into());
    assert_eq!(
        read_err(&spec),
        "DIR/q.parquet: no column `prompt` (columns: id, text, n)"
    );
    let bad = write("r.parquet", b"PAR1 this is not parquet");
    let e = read_err(&bad);
    assert!(
        e.starts_with("DIR/r.parquet: not a readable Parquet file: "),
        "{e}"
    );
}

#[test]
fn scan_counts_and_finds_duplicate_ids() {
    let mut spec = write(
        "s.jsonl",
        b"{\"id\": \"a\", \"text\": \"x\"}\n{\"id\": \"b\", \"text\": \"y\"}\n\n{\"id\": \"a\", \"text\": \"z\"}\n",
    );
    assert_eq!(scan(&spec).unwrap(), DatasetSummary { prompts: 3 });
    spec.id_field = Some("id".into());
    let e = scan(&spec).unwrap_err().to_string();
    assert_eq!(
        e.replace(spec.path.parent().unwrap().to_str().unwrap(), "DIR"),
        "DIR/s.jsonl:4: doc_id `a` is already used at line 1"
    );
    spec.limit = Some(2);
    assert_eq!(scan(&spec).unwrap(), DatasetSummary { prompts: 2 });
}

/// The shipped example dataset is valid, has ids, and has no duplicates.
#[test]
fn quickstart_dataset() {
    let mut spec =
        DatasetSpec::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/quickstart.jsonl"));
    spec.id_field = Some("id".into());
    let n = scan(&spec).unwrap().prompts;
    assert!((30..=60).contains(&n), "{n} prompts");
}

/// A spec naming the three pair fields.
fn paired(mut spec: DatasetSpec) -> DatasetSpec {
    spec.corrupted_field = Some("bad".into());
    spec.answer_field = Some("a".into());
    spec.foil_field = Some("b".into());
    spec
}

fn read_pairs(spec: &DatasetSpec) -> Vec<Pair> {
    open(spec).unwrap().map(|p| p.unwrap().pair).collect()
}

fn pair(bad: &str, a: &str, b: &str) -> Pair {
    Pair {
        corrupted: Some(bad.into()),
        answer: Some(a.into()),
        foil: Some(b.into()),
    }
}

/// Paired rows read their corrupted prompt, answer and foil in every format with fields (leading
/// spaces kept); a row missing one, or with an empty one, is an error naming the row.
#[test]
fn paired_rows_in_every_format() {
    let want = vec![pair("B x", " A", " B"), pair("D y", " C", " D")];
    let spec = paired(write(
        "p.jsonl",
        b"{\"text\": \"A x\", \"bad\": \"B x\", \"a\": \" A\", \"b\": \" B\"}\n{\"text\": \"C y\", \"bad\": \"D y\", \"a\": \" C\", \"b\": \" D\"}\n",
    ));
    assert_eq!(read_pairs(&spec), want);
    let spec = paired(write(
        "p.csv",
        b"text,bad,a,b\nA x,B x, A, B\nC y,D y, C, D\n",
    ));
    assert_eq!(read_pairs(&spec), want);
    let col = |v: [&str; 2]| Arc::new(StringArray::from(v.to_vec())) as ArrayRef;
    let schema = Arc::new(Schema::new(
        ["text", "bad", "a", "b"]
            .map(|n| Field::new(n, DataType::Utf8, false))
            .to_vec(),
    ));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            col(["A x", "C y"]),
            col(["B x", "D y"]),
            col([" A", " C"]),
            col([" B", " D"]),
        ],
    )
    .unwrap();
    let spec = paired(write_parquet("p.parquet", &[batch]));
    assert_eq!(read_pairs(&spec), want);
    // Only the fields the spec names are read.
    let mut only = write("q.jsonl", b"{\"text\": \"A x\", \"a\": \" A\"}\n");
    only.answer_field = Some("a".into());
    assert_eq!(
        read_pairs(&only),
        [Pair {
            answer: Some(" A".into()),
            ..Pair::default()
        }]
    );

    let spec = paired(write(
        "m.jsonl",
        b"{\"text\": \"A x\", \"bad\": \"B x\", \"a\": \" A\", \"b\": \" B\"}\n{\"text\": \"C y\", \"bad\": \"D y\", \"a\": \" C\"}\n",
    ));
    assert_eq!(
        read_err(&spec),
        "DIR/m.jsonl:2: no field `b` (fields: a, bad, text)"
    );
    let spec = paired(write("m.csv", b"text,bad,a,b\nA x,B x, A,\n"));
    assert_eq!(read_err(&spec), "DIR/m.csv:2: column `b` is empty");
    let spec = paired(write("n.csv", b"text,bad,a\nA x,B x, A\n"));
    assert_eq!(
        read_err(&spec),
        "DIR/n.csv:1: no column `b` (columns: text, bad, a)"
    );
}
