//! GGML tensor types in GGUF files: llama.cpp's type ids and names, the ones tokenlens can
//! dequantize (those candle's `GgmlDType` reads), and naming the tensor of a type it cannot.
//!
//! candle refuses a file holding a tensor of an unknown type at `Content::read`, with a message
//! that names neither the tensor nor the type; [`unsupported_tensor_type`] re-reads the header to
//! say which tensor it is.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// llama.cpp's tensor types (`enum ggml_type` in ggml.h, as gguf-py 0.19 lists them): id, name.
pub const GGML_TYPES: &[(u32, &str)] = &[
    (0, "F32"),
    (1, "F16"),
    (2, "Q4_0"),
    (3, "Q4_1"),
    (6, "Q5_0"),
    (7, "Q5_1"),
    (8, "Q8_0"),
    (9, "Q8_1"),
    (10, "Q2_K"),
    (11, "Q3_K"),
    (12, "Q4_K"),
    (13, "Q5_K"),
    (14, "Q6_K"),
    (15, "Q8_K"),
    (16, "IQ2_XXS"),
    (17, "IQ2_XS"),
    (18, "IQ3_XXS"),
    (19, "IQ1_S"),
    (20, "IQ4_NL"),
    (21, "IQ3_S"),
    (22, "IQ2_S"),
    (23, "IQ4_XS"),
    (24, "I8"),
    (25, "I16"),
    (26, "I32"),
    (27, "I64"),
    (28, "F64"),
    (29, "IQ1_M"),
    (30, "BF16"),
    (34, "TQ1_0"),
    (35, "TQ2_0"),
    (39, "MXFP4"),
    (40, "NVFP4"),
    (41, "Q1_0"),
];

/// The type ids tokenlens dequantizes: exactly those candle 0.11's `GgmlDType` reads (checked by
/// a test below).
pub const SUPPORTED_TYPE_IDS: &[u32] = &[0, 1, 30, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// llama.cpp's name of a type id, if it has one.
pub fn type_name(id: u32) -> Option<&'static str> {
    GGML_TYPES.iter().find(|(i, _)| *i == id).map(|(_, n)| *n)
}

/// The supported types' names, comma-separated.
pub fn supported_type_names() -> String {
    let names: Vec<&str> = SUPPORTED_TYPE_IDS
        .iter()
        .filter_map(|&id| type_name(id))
        .collect();
    names.join(", ")
}

/// If the GGUF file at `path` has a tensor of a type tokenlens cannot dequantize, the message
/// naming it (the first such tensor, its type and id, how many more there are, the supported
/// types); None if there is none or the header cannot be read this far.
pub fn unsupported_tensor_type(path: &Path) -> Option<String> {
    let mut reader = BufReader::new(File::open(path).ok()?);
    let bad = unsupported_tensors(&mut reader)?;
    let (name, id) = bad.first()?;
    let kind = match type_name(*id) {
        Some(n) => format!("type {n} (GGML type id {id})"),
        None => format!("GGML type id {id}, a type unknown to tokenlens"),
    };
    let more = match bad.len() - 1 {
        0 => String::new(),
        1 => " (and 1 more tensor of an unsupported type)".to_string(),
        n => format!(" (and {n} more tensors of unsupported types)"),
    };
    Some(format!(
        "tensor `{name}` has {kind}, which tokenlens cannot dequantize{more}; supported types: {}",
        supported_type_names()
    ))
}

/// The tensors of unsupported types (name, type id), in file order; None if the header is not
/// a GGUF header this reader understands.
fn unsupported_tensors<R: Read + Seek>(r: &mut R) -> Option<Vec<(String, u32)>> {
    if u32le(r)? != 0x4655_4747 {
        return None; // "GGUF"
    }
    let wide = match u32le(r)? {
        1 => false,
        2 | 3 => true,
        _ => return None,
    };
    let n_tensors = len(r, wide)?;
    let n_kv = len(r, wide)?;
    for _ in 0..n_kv {
        let key = len(r, wide)?;
        skip(r, key)?;
        let value_type = u32le(r)?;
        skip_value(r, value_type, wide, 0)?;
    }
    let mut bad = Vec::new();
    for _ in 0..n_tensors {
        let n = len(r, wide)?;
        if n > 1 << 16 {
            return None;
        }
        let mut name = vec![0; n as usize];
        r.read_exact(&mut name).ok()?;
        let n_dims = u32le(r)?;
        if n_dims > 8 {
            return None;
        }
        skip(r, u64::from(n_dims) * if wide { 8 } else { 4 })?;
        let id = u32le(r)?;
        skip(r, 8)?; // offset
        if !SUPPORTED_TYPE_IDS.contains(&id) {
            bad.push((String::from_utf8_lossy(&name).into_owned(), id));
        }
    }
    Some(bad)
}

/// Skips one metadata value of GGUF value type `t`.
fn skip_value<R: Read + Seek>(r: &mut R, t: u32, wide: bool, depth: u32) -> Option<()> {
    let fixed = |t: u32| match t {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    };
    match t {
        8 => {
            let n = len(r, wide)?;
            skip(r, n)
        }
        9 if depth < 4 => {
            let elem = u32le(r)?;
            let n = len(r, wide)?;
            match fixed(elem) {
                Some(size) => skip(r, n.checked_mul(size)?),
                None => (0..n).try_for_each(|_| skip_value(r, elem, wide, depth + 1)),
            }
        }
        _ => skip(r, fixed(t)?),
    }
}

/// A string or array length: u64 since GGUF v2, u32 in v1.
fn len<R: Read>(r: &mut R, wide: bool) -> Option<u64> {
    if wide {
        u64le(r)
    } else {
        u32le(r).map(u64::from)
    }
}

fn skip<R: Seek>(r: &mut R, n: u64) -> Option<()> {
    r.seek(SeekFrom::Current(i64::try_from(n).ok()?)).ok()?;
    Some(())
}

fn u32le<R: Read>(r: &mut R) -> Option<u32> {
    let mut b = [0; 4];
    r.read_exact(&mut b).ok()?;
    Some(u32::from_le_bytes(b))
}

fn u64le<R: Read>(r: &mut R) -> Option<u64> {
    let mut b = [0; 8];
    r.read_exact(&mut b).ok()?;
    Some(u64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use candle_core::quantized::gguf_file::Content;

    use super::*;

    /// A GGUF v3 file: one string metadata entry, one array of strings, one 1-d tensor of 256
    /// elements of type `id` named `w` (its data left out: only the header matters here).
    fn header(id: u32) -> Vec<u8> {
        let mut b = Vec::new();
        let s = |b: &mut Vec<u8>, s: &str| {
            b.extend((s.len() as u64).to_le_bytes());
            b.extend(s.as_bytes());
        };
        b.extend(b"GGUF");
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes()); // tensors
        b.extend(2u64.to_le_bytes()); // metadata entries
        s(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        s(&mut b, "llama");
        s(&mut b, "tokenizer.ggml.tokens");
        b.extend(9u32.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        s(&mut b, "a");
        s(&mut b, "bc");
        s(&mut b, "w");
        b.extend(1u32.to_le_bytes());
        b.extend(256u64.to_le_bytes());
        b.extend(id.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b
    }

    #[test]
    fn supported_ids_are_exactly_what_candle_reads() {
        for id in 0..64 {
            let candle_reads = Content::read(&mut Cursor::new(header(id))).is_ok();
            assert_eq!(
                candle_reads,
                SUPPORTED_TYPE_IDS.contains(&id),
                "type id {id} ({:?})",
                type_name(id)
            );
            let bad = unsupported_tensors(&mut Cursor::new(header(id))).unwrap();
            let expected = if candle_reads {
                vec![]
            } else {
                vec![("w".to_string(), id)]
            };
            assert_eq!(bad, expected, "type id {id}");
        }
        assert_eq!(
            supported_type_names(),
            "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K"
        );
    }

    #[test]
    fn not_gguf_is_none() {
        assert!(unsupported_tensors(&mut Cursor::new(b"definitely not gguf".to_vec())).is_none());
        let mut truncated = header(16);
        truncated.truncate(40);
        assert!(unsupported_tensors(&mut Cursor::new(truncated)).is_none());
    }
}
