"""Reads every table of a tokenlens run, or of a comparison directory (`tokenlens compare`), with
polars and pandas (and duckdb if installed) and checks them against the run's manifest (the
comparison's comparison.json) and the table definitions (`tokenlens schema`).

Usage: python tests/interop/check_tables.py RUN_OR_COMPARISON_DIR SCHEMA_JSON
Exit code 0 when every check passes; prints one line per table.
"""
import json
import sys
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

run = Path(sys.argv[1])
schema = {t["name"]: t["columns"] for t in json.load(open(sys.argv[2]))}
kinds = {t["name"]: t.get("kind", "run") for t in json.load(open(sys.argv[2]))}
comparison = (run / "comparison.json").exists()
if comparison:
    # A comparison directory: its tables and their rows are in comparison.json.
    manifest = json.load(open(run / "comparison.json"))
    assert manifest["kind"] == "comparison", f"kind {manifest['kind']}"
    expected = {t: e["rows"] for t, e in manifest["tables"].items()}
    manifest["tables"] = list(expected)
    for t in manifest["tables"]:
        assert kinds[t] in ("comparison", "both"), f"{t} is a {kinds[t]} table"
else:
    manifest = json.load(open(run / "manifest.json"))
    assert manifest["status"] == "done", f"run status {manifest['status']}"
    # Expected rows per table: the sum over the shards' status.
    expected = {}
    for shard in manifest["shards"].values():
        for table, n in shard["rows"].items():
            expected[table] = expected.get(table, 0) + n
    # NMF, neuron and similarity tables cover the whole corpus: their rows are recorded once, by
    # their stage.
    expected.update(manifest.get("nmf_rows", {}))
    expected.update(manifest.get("neurons_rows", {}))
    expected.update(manifest.get("similarity_rows", {}))
    for t in manifest["tables"]:
        assert kinds[t] in ("run", "both"), f"{t} is a {kinds[t]} table"

ARROW = {
    "string": {pa.string(), pa.large_string()},
    "bool": {pa.bool_()},
    "int8": {pa.int8()},
    "int32": {pa.int32()},
    "int64": {pa.int64()},
    "float32": {pa.float32()},
    "float64": {pa.float64()},
    "list<float32>": {pa.list_(pa.float32())},
    "list<float32> or list<float16>": {pa.list_(pa.float32()), pa.list_(pa.float16())},
}
POLARS = {
    "string": {pl.String},
    "bool": {pl.Boolean},
    "int8": {pl.Int8},
    "int32": {pl.Int32},
    "int64": {pl.Int64},
    "float32": {pl.Float32},
    "float64": {pl.Float64},
}

try:
    import duckdb
except ImportError:
    duckdb = None

failures = []
for table in manifest["tables"]:
    cols = schema[table]
    names = [c["name"] for c in cols]
    files = sorted((run / table).glob("*.parquet"))
    if not files:
        failures.append(f"{table}: no parquet files")
        continue
    # Arrow schema of every part.
    for f in files:
        s = pq.read_schema(f)
        if s.names != names:
            failures.append(f"{f}: columns {s.names} != {names}")
        for c in cols:
            t = s.field(c["name"]).type
            if not any(t.equals(x) for x in ARROW[c["type"]]):
                failures.append(f"{f}: column {c['name']} is {t}, expected {c['type']}")
    # polars: the folder as one dataset.
    df = pl.read_parquet(str(run / table / "*.parquet"))
    if df.columns != names:
        failures.append(f"{table}: polars columns {df.columns}")
    for c in cols:
        want = POLARS.get(c["type"])
        if want and df.schema[c["name"]] not in want:
            failures.append(f"{table}: polars {c['name']} is {df.schema[c['name']]}")
        if c["type"].startswith("list") and not isinstance(df.schema[c["name"]], pl.List):
            failures.append(f"{table}: polars {c['name']} is not a list")
        if not c["nullable"] and df[c["name"]].null_count() != 0:
            failures.append(f"{table}: {c['name']} has nulls")
    # pandas (pyarrow engine): the folder; hidden temporary files are ignored.
    pdf = pd.read_parquet(run / table)
    if list(pdf.columns) != names:
        failures.append(f"{table}: pandas columns {list(pdf.columns)}")
    n = expected.get(table)
    for who, got in [("polars", df.height), ("pandas", len(pdf))]:
        if got != n:
            failures.append(f"{table}: {who} reads {got} rows, manifest says {n}")
    # The same values through both readers (first numeric column's sum).
    num = next((c["name"] for c in cols if c["type"] in ("int32", "int64", "float32", "float64")), None)
    if num is not None:
        a, b = float(df[num].sum()), float(pdf[num].sum())
        if abs(a - b) > 1e-6 * max(1.0, abs(a)):
            failures.append(f"{table}: sum({num}) polars {a} vs pandas {b}")
    if duckdb is not None:
        got = duckdb.sql(f"select count(*) from read_parquet('{run / table}/*.parquet')").fetchall()[0][0]
        if got != n:
            failures.append(f"{table}: duckdb reads {got} rows, manifest says {n}")
    print(f"{table:22s} {n:>9} rows  polars {df.height}  pandas {len(pdf)}  ok" if not failures else f"{table}: see failures")

# Joins work on doc_id across tables.
if comparison:
    docs = pl.read_parquet(str(run / "diff_docs" / "*.parquet"))
    if "diff" in manifest["tables"]:
        diff = pl.read_parquet(str(run / "diff" / "*.parquet"))
        per_doc = diff.group_by("doc_id").agg(pl.len().alias("rows"))
        joined = docs.join(per_doc, on="doc_id", how="left").with_columns(pl.col("rows").fill_null(0))
        if joined.filter(pl.col("rows") != pl.col("common")).height:
            failures.append("diff rows per document differ from diff_docs.common")
        if diff.join(docs, on="doc_id", how="anti").height:
            failures.append("diff has documents diff_docs lacks")
else:
    tokens = pl.read_parquet(str(run / "tokens" / "*.parquet"))
    gens = pl.read_parquet(str(run / "generations" / "*.parquet"))
    joined = tokens.join(gens.select("doc_id", "prompt_tokens"), on="doc_id", how="inner")
    if joined.height != tokens.height:
        failures.append("tokens do not all join generations on doc_id")
    if (joined.filter(pl.col("is_generated") != (pl.col("position") >= pl.col("prompt_tokens")))).height:
        failures.append("tokens.is_generated disagrees with generations.prompt_tokens")

if failures:
    print("\n".join(["FAILED:"] + failures))
    sys.exit(1)
print(f"ok: {len(manifest['tables'])} tables of {run} read by polars {pl.__version__}, pandas {pd.__version__}"
      + (f", duckdb {duckdb.__version__}" if duckdb else ""))
