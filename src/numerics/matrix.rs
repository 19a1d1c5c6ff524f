//! Dense row-major matrices on raw f32 slices: products through the gemm crate (`gemm_raw` on
//! raw pointers; `gemm_strided` on slices, threaded outside rayon tasks; `mm`, single-threaded;
//! `gemm_f64` / `gemm_f64_into`, `gemm_strided` in f64) and a tiled transpose.

use rayon::prelude::*;

/// All threads for a gemm called outside rayon tasks; one inside them (row groups, heads or
/// targets already run in parallel).
pub(crate) fn gemm_parallelism() -> gemm::Parallelism {
    let threads = rayon::current_num_threads();
    match rayon::current_thread_index() {
        None if threads > 1 => gemm::Parallelism::Rayon(threads),
        _ => gemm::Parallelism::None,
    }
}

/// dst [m, n] (row-major, contiguous) (+)= lhs . rhs with lhs[i, kk] at `lhs[i * lrs + kk * lcs]`
/// and rhs[kk, j] at `rhs[kk * rrs + j * rcs]`. Multi-threaded unless already inside a rayon task.
/// Panics if an operand is smaller than its strides say.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_strided(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    acc: bool,
    lhs: &[f32],
    lrs: usize,
    lcs: usize,
    rhs: &[f32],
    rrs: usize,
    rcs: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(dst.len() >= m * n, "gemm: dst size");
    assert!(k == 0 || lhs.len() > last(m, k, lrs, lcs), "gemm: lhs size");
    assert!(k == 0 || rhs.len() > last(k, n, rrs, rcs), "gemm: rhs size");
    let parallelism = gemm_parallelism();
    // SAFETY: the asserts above check every operand covers the matrix its strides describe.
    unsafe {
        gemm_raw(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            n,
            acc,
            lhs.as_ptr(),
            lrs,
            lcs,
            rhs.as_ptr(),
            rrs,
            rcs,
            1.0,
            parallelism,
        )
    }
}

/// `gemm` on row-major operands: dst[m, n] (row stride dst_rs) = alpha * dst (if `acc`) + beta *
/// lhs[m, k] . rhs[k, n], each operand given by (row stride, column stride), on the threads
/// `parallelism` gives.
///
/// # Safety
/// Every pointer must address the whole matrix its strides describe; dst must not alias the inputs.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    acc: bool,
    lhs: *const f32,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
    beta: f32,
    parallelism: gemm::Parallelism,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            acc,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            beta,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// `gemm_raw` on one thread, for callers that already run as parallel tasks.
///
/// # Safety
/// As for `gemm_raw`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn mm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    acc: bool,
    lhs: *const f32,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
    beta: f32,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm_raw(
            m,
            n,
            k,
            dst,
            dst_rs,
            acc,
            lhs,
            lhs_rs,
            lhs_cs,
            rhs,
            rhs_rs,
            rhs_cs,
            beta,
            gemm::Parallelism::None,
        )
    }
}

/// f64 `gemm_strided`: dst [m, n] (row-major, contiguous) (+)= lhs . rhs with lhs[i, kk] at
/// `lhs[i * lrs + kk * lcs]` and rhs[kk, j] at `rhs[kk * rrs + j * rcs]`. Multi-threaded unless
/// already inside a rayon task. Panics if an operand is smaller than its strides say.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_f64(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f64],
    acc: bool,
    lhs: &[f64],
    lrs: usize,
    lcs: usize,
    rhs: &[f64],
    rrs: usize,
    rcs: usize,
) {
    gemm_f64_into(m, n, k, dst, n, acc, lhs, lrs, lcs, rhs, rrs, rcs)
}

/// `gemm_f64` into dst [m, n] with row stride `dst_rs` (a block of a wider matrix).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_f64_into(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f64],
    dst_rs: usize,
    acc: bool,
    lhs: &[f64],
    lrs: usize,
    lcs: usize,
    rhs: &[f64],
    rrs: usize,
    rcs: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(
        dst_rs >= n && dst.len() > last(m, n, dst_rs, 1),
        "gemm_f64: dst size"
    );
    assert!(
        k == 0 || lhs.len() > last(m, k, lrs, lcs),
        "gemm_f64: lhs size"
    );
    assert!(
        k == 0 || rhs.len() > last(k, n, rrs, rcs),
        "gemm_f64: rhs size"
    );
    if k == 0 {
        if !acc {
            dst.chunks_mut(dst_rs)
                .take(m)
                .for_each(|r| r[..n].fill(0.0));
        }
        return;
    }
    // SAFETY: the asserts above check every operand covers the matrix its strides describe;
    // dst is a &mut, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            acc,
            lhs.as_ptr(),
            lcs as isize,
            lrs as isize,
            rhs.as_ptr(),
            rcs as isize,
            rrs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm_parallelism(),
        )
    }
}

/// `src` [rows, cols] row-major, transposed to [cols, rows]: 32 x 32 tiles, one band of output
/// rows per task.
pub(crate) fn transpose<T: Copy + Default + Send + Sync>(
    src: &[T],
    rows: usize,
    cols: usize,
) -> Vec<T> {
    const TILE: usize = 32;
    assert_eq!(src.len(), rows * cols, "transpose: size");
    let mut dst = vec![T::default(); rows * cols];
    dst.par_chunks_mut(TILE * rows.max(1))
        .enumerate()
        .for_each(|(band, out)| {
            let c0 = band * TILE;
            let nc = out.len() / rows.max(1);
            for r0 in (0..rows).step_by(TILE) {
                for c in c0..c0 + nc {
                    for r in r0..(r0 + TILE).min(rows) {
                        out[(c - c0) * rows + r] = src[r * cols + c];
                    }
                }
            }
        });
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_matches_naive() {
        for (r, c) in [(1, 5), (5, 1), (37, 70), (64, 32), (33, 100)] {
            let src: Vec<f32> = (0..r * c).map(|i| i as f32).collect();
            let t = transpose(&src, r, c);
            for i in 0..r {
                for j in 0..c {
                    assert_eq!(t[j * r + i], src[i * c + j], "{r}x{c} at {i},{j}");
                }
            }
        }
    }
}
