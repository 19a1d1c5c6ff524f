"""GGUF quant-type goldens: one small GGUF holding a tensor of every tensor type llama.cpp files use
in practice, and the gguf Python package's (gguf-py's) own dequantization of each, as f32.

Run with the reference venv (scripts/README.md):

    ~/.cache/tokenlens/refenv/bin/python scripts/make_quant_goldens.py

Writes tests/data/quants/quants.gguf and tests/data/quants/dequantized.safetensors; the Rust test
tests/it/quants.rs reads the GGUF through tokenlens' own dequantization (candle's) and compares.
Deterministic (numpy's PCG64 seeded with SEED, no threads): a rerun gives byte-identical files.

Per type one tensor named after the type (`F32`, `Q4_K`, ...), shape [ROWS, COLS] = [2, 512]
(COLS a multiple of every block size: 32 for the legacy quants, 256 for the K-quants), made from
one random f32 matrix (normal, std 0.5, a few +-3 outliers; the first 32 values of row 1 are tiny,
~1e-6, so that F16 and BF16 meet subnormals and a legacy-quant block gets a tiny scale):

  F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0
        that matrix quantized by `gguf.quants.quantize` (F16: numpy's float16 cast; BF16:
        round-to-nearest-even, as ggml's ggml_compute_fp32_to_bf16)
  Q2_K, Q3_K, Q4_K, Q5_K, Q6_K
        gguf-py cannot quantize these (only dequantize), so their blocks are random bytes (every
        bit pattern of the packed quants, masks and 4/6/8-bit scales is a valid block) with the
        f16 super-block scales `d` (and `dmin`) overwritten by sane values, uniform in
        [0.002, 0.05] as f16. Block layouts (gguf-py's quants.py, ggml-common.h):
          Q2_K  84 B: scales[16] (lo nibble scale, hi nibble min), qs[64], d, dmin
          Q3_K 110 B: hmask[32], qs[64], scales[12] (6-bit packed), d
          Q4_K 144 B: d, dmin, scales[12] (6-bit packed scales and mins), qs[128]
          Q5_K 176 B: d, dmin, scales[12], qh[32], qs[128]
          Q6_K 210 B: ql[128], qh[64], scales[16] (int8), d

The golden of each type is `gguf.quants.dequantize(raw bytes, type)` as float32, key = the type
name; the safetensors metadata (one key, `golden`, a JSON string) records per type how the blocks were made, the seed and versions.
"""

import json
import sys
from importlib.metadata import version as pkg_version
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T
from safetensors.numpy import save_file

OUT = Path(__file__).resolve().parent.parent / "tests/data/quants"
SEED = 14
ROWS, COLS = 2, 512

QUANTIZED = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]

# K-quants from random bytes: type -> byte offsets of the f16 scales d (and dmin) in a block.
RANDOM_BLOCKS = {
    T.Q2_K: {"d": 80, "dmin": 82},
    T.Q3_K: {"d": 108},
    T.Q4_K: {"d": 0, "dmin": 2},
    T.Q5_K: {"d": 0, "dmin": 2},
    T.Q6_K: {"d": 208},
}


def source_matrix(rng):
    x = rng.standard_normal((ROWS, COLS)).astype(np.float32) * np.float32(0.5)
    outliers = rng.choice(ROWS * COLS, size=8, replace=False)
    x.flat[outliers] = rng.choice([-3.0, 3.0], size=8).astype(np.float32)
    x[1, :32] *= np.float32(2e-6)
    return x


def random_blocks(rng, qtype, offsets):
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = ROWS * COLS // block
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for off in offsets.values():
        scale = rng.uniform(0.002, 0.05, size=n_blocks).astype(np.float16)
        raw[:, off : off + 2] = scale.view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(ROWS, -1)


def main():
    rng = np.random.default_rng(SEED)
    OUT.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(OUT / "quants.gguf", arch="tokenlens-quants", use_temp_file=False)
    writer.add_description(
        "tokenlens quant-type goldens (scripts/make_quant_goldens.py): one tensor per type"
    )
    goldens, how = {}, {}
    for qtype in QUANTIZED + list(RANDOM_BLOCKS):
        if qtype in RANDOM_BLOCKS:
            raw = random_blocks(rng, qtype, RANDOM_BLOCKS[qtype])
            how[qtype.name] = "random blocks, f16 d/dmin uniform in [0.002, 0.05]"
        else:
            raw = gguf.quants.quantize(source_matrix(rng), qtype)
            how[qtype.name] = "gguf.quants.quantize of a random matrix"
        raw = np.ascontiguousarray(raw).view(np.uint8).reshape(ROWS, -1)
        deq = np.asarray(gguf.quants.dequantize(raw, qtype), dtype=np.float32)
        assert deq.shape == (ROWS, COLS), (qtype.name, deq.shape)
        assert np.isfinite(deq).all(), qtype.name
        writer.add_tensor(qtype.name, raw, raw_dtype=qtype)
        goldens[qtype.name] = np.ascontiguousarray(deq)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    meta = {
        "generator": "scripts/make_quant_goldens.py",
        "seed": SEED,
        "shape": [ROWS, COLS],
        "how": how,
        "versions": {
            "python": sys.version.split()[0],
            "gguf": pkg_version("gguf"),
            "numpy": np.__version__,
            "safetensors": pkg_version("safetensors"),
        },
    }
    # One metadata key: safetensors writes several in no fixed order.
    golden_meta = {"golden": json.dumps(meta, sort_keys=True)}
    save_file(goldens, OUT / "dequantized.safetensors", metadata=golden_meta)
    for p in sorted(OUT.iterdir()):
        print(f"{p.relative_to(OUT.parent.parent.parent)}: {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
