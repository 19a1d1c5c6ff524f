//! The NMF stage's scratch copy of X: a streamed factorization writes X to a file on its first
//! pass (float16 when the activations are, which is exact; else float32) and reads later passes
//! back from it, with a reader thread converting the next chunk while the solver works on this
//! one, instead of decoding the Parquet parts again (~5x faster).

use std::fs::File;
use std::path::{Path, PathBuf};

use half::slice::HalfFloatSliceExt;

use crate::error::{Error, Result};

/// X as written by its first pass, raw (float16 when the activations are, which is exact; else
/// float32), in a scratch file: later passes read it back instead of decoding the Parquet parts
/// again (~5x faster). If the file cannot be written (e.g. no space), passes keep reading Parquet.
pub(super) struct Spill {
    pub path: PathBuf,
    pub f16: bool,
    /// The file holds all of X.
    pub ready: bool,
    /// Writing failed once: not tried again.
    pub failed: bool,
    pub bytes: u64,
}

/// The bytes of a slice of plain numbers (f32, f16), for raw file I/O in native byte order.
fn as_bytes<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: only called with f32 and f16 (a transparent u16): no padding, and the bytes are
    // read back as the same numbers by this process (the file never leaves the machine).
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

fn as_bytes_mut<T: Copy>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: as `as_bytes`; every bit pattern is a valid f32 or f16.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

impl Spill {
    pub fn new(dir: &Path, f16: bool) -> Self {
        Spill {
            path: dir.join(if f16 { "x.f16" } else { "x.f32" }),
            f16,
            ready: false,
            failed: false,
            bytes: 0,
        }
    }

    /// Appends a chunk; on failure the file is removed and `failed` set.
    pub fn write(
        &mut self,
        file: &mut Option<std::io::BufWriter<File>>,
        chunk: &[f32],
        half: &mut Vec<half::f16>,
    ) {
        use std::io::Write;
        let Some(w) = file else { return };
        let r = if self.f16 {
            half.resize(chunk.len(), half::f16::ZERO);
            half.convert_from_f32_slice(chunk);
            w.write_all(as_bytes(half))
        } else {
            w.write_all(as_bytes(chunk))
        };
        if r.is_err() {
            *file = None;
            self.failed = true;
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// Calls `f` on every chunk of X read back from the file. A thread reads (and converts) the
    /// next chunk while `f` works on this one: two chunk buffers.
    pub fn read(
        &self,
        rows: usize,
        cols: usize,
        chunk_rows: usize,
        on_chunk: &dyn Fn(),
        f: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()> {
        use std::io::Read;
        use std::sync::mpsc::sync_channel;
        let mut file = File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        type Full = std::io::Result<(usize, Vec<f32>)>;
        let (full_tx, full_rx) = sync_channel::<Full>(1);
        let (empty_tx, empty_rx) = sync_channel::<Vec<f32>>(2);
        for _ in 0..2 {
            empty_tx
                .send(Vec::with_capacity(chunk_rows * cols))
                .expect("the receiver is alive");
        }
        let f16 = self.f16;
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let mut half = vec![half::f16::ZERO; if f16 { chunk_rows * cols } else { 0 }];
                let mut first = 0;
                while first < rows {
                    let Ok(mut chunk) = empty_rx.recv() else {
                        return; // the consumer stopped (an error)
                    };
                    let n = (rows - first).min(chunk_rows) * cols;
                    chunk.resize(n, 0.0);
                    let r = if f16 {
                        let h = &mut half[..n];
                        file.read_exact(as_bytes_mut(h))
                            .map(|()| h.convert_to_f32_slice(&mut chunk))
                    } else {
                        file.read_exact(as_bytes_mut(&mut chunk))
                    };
                    let failed = r.is_err();
                    if full_tx.send(r.map(|()| (first, chunk))).is_err() || failed {
                        return;
                    }
                    first += chunk_rows;
                }
            });
            let mut done = 0;
            while done < rows {
                let (first, chunk) = full_rx
                    .recv()
                    .expect("the reader sends every chunk or an error")
                    .map_err(|e| Error::io(&self.path, e))?;
                on_chunk();
                f(first, &chunk)?;
                done = first + chunk.len() / cols;
                let _ = empty_tx.send(chunk);
            }
            Ok(())
        })
    }
}
