//! Eigendecomposition of a dense real symmetric matrix in f64: Householder reduction to
//! tridiagonal form, then the implicit QL algorithm with Wilkinson shifts (EISPACK's tred2 and
//! tql2, as in JAMA), rearranged for row-major storage, wide SIMD and rayon.
//!
//! - Reduction: on the rows of the leading block; each step's rank-2 update of a row is fused
//!   with the next step's matrix-vector product on it, so the block is read once per step (rows
//!   in parallel when it is large).
//! - QL: the iteration runs on the tridiagonal alone and records its rotations; they are applied
//!   in batches to Qᵀ, held as panels of 32 columns (each panel's rows contiguous, so a sweep
//!   does not miss the TLB on every row), one sweep at a time as a chain that keeps the row in
//!   between in registers, panels in parallel.
//! - Back-transformation: the reflectors 32 at a time in the compact WY form (Schreiber & Van
//!   Loan 1989), three gemms per block.
//!
//! The result's `vectors` are stored one eigenvector per row. Only the lower triangle of the
//! input is read. The row kernels go through `simd_call!` (AVX-512 or AVX2 when present, the
//! same bits either way). Measured on a shared 2-core Xeon (Sapphire Rapids, loaded by other
//! builds): n = 1536 in 2.7-3.8 s with vectors, 0.8-2.2 s eigenvalues only; n = 576 in
//! 0.11-0.2 s and 0.05-0.08 s.

use rayon::prelude::*;

use super::matrix::gemm_f64_into;
use super::simd::simd_call;

/// Eigenvalues in ascending order and their unit eigenvectors.
#[derive(Debug, Clone)]
pub struct SymmetricEigen {
    n: usize,
    /// Ascending.
    pub values: Vec<f64>,
    /// Row-major n × n; **row** j is the unit eigenvector of `values[j]` (the transpose of the
    /// column layout of LAPACK and numpy's `eigh`): A = Vᵀ diag(values) V.
    pub vectors: Vec<f64>,
}

impl SymmetricEigen {
    pub fn n(&self) -> usize {
        self.n
    }
    /// The unit eigenvector of `values[j]`.
    pub fn vector(&self, j: usize) -> &[f64] {
        &self.vectors[j * self.n..(j + 1) * self.n]
    }
}

/// Why an eigendecomposition failed.
#[derive(Debug, Clone, PartialEq)]
pub enum EigenError {
    /// The slice does not hold an n × n matrix.
    Shape { len: usize, n: usize },
    /// An entry of the lower triangle is NaN or infinite.
    NotFinite { row: usize, col: usize },
    /// The QL iteration did not converge for this eigenvalue (only seen with non-finite
    /// intermediate values).
    NoConvergence { index: usize },
}

impl std::fmt::Display for EigenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EigenError::Shape { len, n } => {
                write!(f, "eigen: {len} values are not a {n} x {n} matrix")
            }
            EigenError::NotFinite { row, col } => {
                write!(f, "eigen: entry ({row}, {col}) is not finite")
            }
            EigenError::NoConvergence { index } => {
                write!(
                    f,
                    "eigen: QL iteration did not converge for eigenvalue {index}"
                )
            }
        }
    }
}

impl std::error::Error for EigenError {}

/// Below this size everything runs on the calling thread.
const PARALLEL_MIN: usize = 192;
/// QL iterations allowed per eigenvalue (EISPACK allows 30).
const MAX_ITER: usize = 60;

/// Eigenvalues (ascending) and eigenvectors of the symmetric n × n matrix `a` (row-major; only
/// its lower triangle, diagonal included, is read).
pub fn symmetric_eigen(a: &[f64], n: usize) -> Result<SymmetricEigen, EigenError> {
    let mut w = symmetrized(a, n)?;
    if n == 0 {
        return Ok(SymmetricEigen {
            n,
            values: Vec::new(),
            vectors: Vec::new(),
        });
    }
    let mut d = vec![0.0; n];
    let mut e = vec![0.0; n];
    let mut hs = vec![0.0; n];
    tridiagonalize(&mut w, n, &mut d, &mut e, &mut hs);
    let mut panels = Panels::identity(n);
    tridiagonal_ql(&mut d, &mut e, Some(&mut panels), n)?;
    let mut q = panels.to_rows();
    drop(panels);
    back_transform(&w, &hs, &mut q, n);
    sort_ascending(&mut d, Some(&mut q), n);
    Ok(SymmetricEigen {
        n,
        values: d,
        vectors: q,
    })
}

/// The eigenvalues (ascending) of the symmetric n × n matrix `a` (only its lower triangle is
/// read), without the O(n³) work on eigenvectors.
pub fn symmetric_eigenvalues(a: &[f64], n: usize) -> Result<Vec<f64>, EigenError> {
    let mut w = symmetrized(a, n)?;
    let mut d = vec![0.0; n];
    let mut e = vec![0.0; n];
    let mut hs = vec![0.0; n];
    tridiagonalize(&mut w, n, &mut d, &mut e, &mut hs);
    tridiagonal_ql(&mut d, &mut e, None, n)?;
    sort_ascending(&mut d, None, n);
    Ok(d)
}

/// A full symmetric copy of `a`'s lower triangle, after checking shape and finiteness.
fn symmetrized(a: &[f64], n: usize) -> Result<Vec<f64>, EigenError> {
    if a.len() != n * n {
        return Err(EigenError::Shape { len: a.len(), n });
    }
    let mut w = a.to_vec();
    for i in 0..n {
        for j in 0..=i {
            let v = a[i * n + j];
            if !v.is_finite() {
                return Err(EigenError::NotFinite { row: i, col: j });
            }
            w[j * n + i] = v;
        }
    }
    Ok(w)
}

#[inline(always)]
fn dot_body(x: &[f64], y: &[f64]) -> f64 {
    // Eight accumulators in a fixed order: one wide register, the same bits on every CPU.
    let mut acc = [0.0f64; 8];
    let mut xc = x.chunks_exact(8);
    let mut yc = y.chunks_exact(8);
    for (a, b) in (&mut xc).zip(&mut yc) {
        for t in 0..8 {
            acc[t] += a[t] * b[t];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
    for (a, b) in xc.remainder().iter().zip(yc.remainder()) {
        s += a * b;
    }
    s
}

fn dot(x: &[f64], y: &[f64]) -> f64 {
    simd_call!(dot_body(x: &[f64], y: &[f64]) -> f64)
}

/// Row j of the reduction: r[k] -= u_j q[k] + q_j u[k] over r's length, then (when `next` is
/// not empty) the dot of r's first `next.len()` entries with `next`.
#[inline(always)]
fn update_dot_body(r: &mut [f64], u: &[f64], q: &[f64], uj: f64, qj: f64, next: &[f64]) -> f64 {
    let len = r.len();
    // The sum in parentheses is the same for (j, k) and (k, j): the block stays symmetric.
    for ((x, &uk), &qk) in r.iter_mut().zip(&u[..len]).zip(&q[..len]) {
        *x -= uj * qk + qj * uk;
    }
    if next.is_empty() {
        0.0
    } else {
        dot_body(&r[..next.len()], next)
    }
}

fn update_dot(r: &mut [f64], u: &[f64], q: &[f64], uj: f64, qj: f64, next: &[f64]) -> f64 {
    simd_call!(update_dot_body(r: &mut [f64], u: &[f64], q: &[f64], uj: f64, qj: f64, next: &[f64]) -> f64)
}

/// The Householder vector of `row` (row i's entries left of the diagonal, i ≥ 2), in place: it
/// becomes u with P = I - u uᵀ / h mapping the row onto its last coordinate. Returns (the
/// subdiagonal entry e_i, h); h = 0 (no reflector) for a zero row.
fn reflector(row: &mut [f64]) -> (f64, f64) {
    let i = row.len();
    let scale: f64 = row.iter().map(|x| x.abs()).sum();
    if scale == 0.0 {
        return (0.0, 0.0);
    }
    row.iter_mut().for_each(|x| *x /= scale);
    let sigma = dot(row, row);
    let f = row[i - 1];
    let g = if f >= 0.0 {
        -sigma.sqrt()
    } else {
        sigma.sqrt()
    };
    let h = sigma - f * g;
    row[i - 1] = f - g;
    (scale * g, h)
}

/// Householder reduction of the full symmetric `w` (row-major n × n) to tridiagonal form, from
/// the last row up. On return `d` is the diagonal, `e[i]` the entry (i, i-1) (`e[0]` = 0), and
/// for i ≥ 2 with `hs[i]` ≠ 0 row i of `w` holds in its first i entries the Householder vector u
/// of the reflector P_i = I - u uᵀ / hs[i] that zeroed row i left of the subdiagonal:
/// T = P_2 ⋯ P_{n-1} A P_{n-1} ⋯ P_2. The entries of `w` right of each leading block are left
/// stale (never read again).
fn tridiagonalize(w: &mut [f64], n: usize, d: &mut [f64], e: &mut [f64], hs: &mut [f64]) {
    let mut p = vec![0.0; n];
    let mut p_next = vec![0.0; n];
    // Whether row i's reflector and p = B u / h (B the leading i × i block) are already known,
    // from the previous step's fused pass.
    let mut known = false;
    for i in (2..n).rev() {
        let (top, rest) = w.split_at_mut(i * n);
        if !known {
            let (ei, h) = reflector(&mut rest[..i]);
            e[i] = ei;
            hs[i] = h;
            if h != 0.0 {
                let u = &rest[..i];
                let matvec = |(r, pj): (&[f64], &mut f64)| *pj = dot(&r[..i], u) / h;
                if i >= PARALLEL_MIN {
                    top.par_chunks(n)
                        .zip(p[..i].par_iter_mut())
                        .for_each(matvec);
                } else {
                    top.chunks(n).zip(p[..i].iter_mut()).for_each(matvec);
                }
            }
        }
        known = false;
        let h = hs[i];
        if h == 0.0 {
            continue;
        }
        let u: &[f64] = &rest[..i];
        // q = p - K u with K = uᵀp / 2h; B -= u qᵀ + q uᵀ.
        let k = dot(u, &p[..i]) / (2.0 * h);
        let q = &mut p[..i];
        q.iter_mut().zip(u).for_each(|(pj, &uj)| *pj -= k * uj);
        let q: &[f64] = q;
        // Row i - 1 first (up to its diagonal), then its reflector, then the other rows with the
        // next step's matrix-vector product fused in.
        let (above, row) = top.split_at_mut((i - 1) * n);
        let row = &mut row[..i];
        update_dot(row, u, q, u[i - 1], q[i - 1], &[]);
        let next_h = if i > 2 {
            let (ei, h1) = reflector(&mut row[..i - 1]);
            e[i - 1] = ei;
            hs[i - 1] = h1;
            h1
        } else {
            0.0
        };
        let next: &[f64] = if next_h != 0.0 { &row[..i - 1] } else { &[] };
        let pass = |(j, (r, pj)): (usize, (&mut [f64], &mut f64))| {
            let t = update_dot(&mut r[..i - 1], u, q, u[j], q[j], next);
            if next_h != 0.0 {
                *pj = t / next_h;
            }
        };
        if i >= PARALLEL_MIN {
            above
                .par_chunks_mut(n)
                .zip(p_next[..i - 1].par_iter_mut())
                .enumerate()
                .for_each(pass);
        } else {
            above
                .chunks_mut(n)
                .zip(p_next[..i - 1].iter_mut())
                .enumerate()
                .for_each(pass);
        }
        if next_h != 0.0 {
            std::mem::swap(&mut p, &mut p_next);
            known = true;
        }
    }
    if n > 1 {
        e[1] = w[n];
    }
    for i in 0..n {
        d[i] = w[i * n + i];
    }
    if n > 0 {
        e[0] = 0.0;
    }
}

/// Columns of Qᵀ a rotation chain is applied to at once: four AVX-512 registers, independent
/// dependency chains.
const GROUP: usize = 32;

/// Qᵀ during the QL iteration, as panels of GROUP columns, each n × GROUP contiguous (a panel's
/// rows are 256 bytes apart, not n · 8: a rotation sweep walks its rows without a TLB miss per
/// row). Columns past n are zero and stay zero.
struct Panels {
    n: usize,
    data: Vec<f64>,
}

impl Panels {
    fn identity(n: usize) -> Self {
        let mut data = vec![0.0; n.div_ceil(GROUP) * n * GROUP];
        for i in 0..n {
            let (g, k) = (i / GROUP, i % GROUP);
            data[g * n * GROUP + i * GROUP + k] = 1.0;
        }
        Panels { n, data }
    }

    /// Row-major n × n.
    fn to_rows(&self) -> Vec<f64> {
        let n = self.n;
        let mut out = vec![0.0; n * n];
        for (g, panel) in self.data.chunks_exact(n * GROUP).enumerate() {
            let (k0, w) = (g * GROUP, GROUP.min(n - g * GROUP));
            for (r, row) in out.chunks_exact_mut(n).enumerate() {
                row[k0..k0 + w].copy_from_slice(&panel[r * GROUP..r * GROUP + w]);
            }
        }
        out
    }
}

/// Applies the rotations (row i, c, s) in order to rows i and i + 1 of one panel. A run of
/// rotations on rows i, i-1, i-2, ... (one QL sweep) is applied as a chain: row i + 1 is final
/// after the first rotation, row i after the second, ..., so each row is loaded and stored once
/// per sweep and the row in between is carried in registers.
#[inline(always)]
fn rotate_panel_body(panel: &mut [f64], rots: &[(usize, f64, f64)]) {
    let mut r = 0;
    while r < rots.len() {
        let mut end = r + 1;
        while end < rots.len() && rots[end].0 + 1 == rots[end - 1].0 {
            end += 1;
        }
        let chain = &rots[r..end];
        let top = (chain[0].0 + 1) * GROUP;
        let mut carry: [f64; GROUP] = panel[top..top + GROUP].try_into().expect("a panel row");
        for &(i, c, s) in chain {
            let (lo, hi) = panel.split_at_mut((i + 1) * GROUP);
            let a: &[f64; GROUP] = lo[i * GROUP..].try_into().expect("a panel row");
            let out: &mut [f64; GROUP] = (&mut hi[..GROUP]).try_into().expect("a panel row");
            for t in 0..GROUP {
                let h = carry[t];
                out[t] = s * a[t] + c * h;
                carry[t] = c * a[t] - s * h;
            }
        }
        let last = chain[chain.len() - 1].0 * GROUP;
        panel[last..last + GROUP].copy_from_slice(&carry);
        r = end;
    }
}

fn rotate_panel(panel: &mut [f64], rots: &[(usize, f64, f64)]) {
    simd_call!(rotate_panel_body(panel: &mut [f64], rots: &[(usize, f64, f64)]))
}

/// Rotations recorded over QL sweeps, applied in order to every panel (in parallel; a panel
/// stays in cache while the batch streams past).
fn apply_rotations(qt: &mut Panels, rots: &[(usize, f64, f64)]) {
    let size = qt.n * GROUP;
    if qt.n >= PARALLEL_MIN {
        qt.data
            .par_chunks_mut(size)
            .for_each(|p| rotate_panel(p, rots));
    } else {
        qt.data.chunks_mut(size).for_each(|p| rotate_panel(p, rots));
    }
}

/// Implicit QL with Wilkinson shifts on the tridiagonal (d, e) (JAMA's tql2). With `qt`
/// (the identity on entry), its rows become the eigenvectors of the tridiagonal matrix.
fn tridiagonal_ql(
    d: &mut [f64],
    e: &mut [f64],
    mut qt: Option<&mut Panels>,
    n: usize,
) -> Result<(), EigenError> {
    if n == 0 {
        return Ok(());
    }
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    let mut f = 0.0;
    let mut tst1 = 0.0f64;
    let eps = f64::EPSILON;
    // Rotations wait here and are applied when ROTATION_BATCH have gathered (and at the end):
    // the iteration itself only needs d and e.
    const ROTATION_BATCH: usize = 1 << 17;
    let mut rots: Vec<(usize, f64, f64)> = Vec::new();
    for l in 0..n {
        tst1 = tst1.max(d[l].abs() + e[l].abs());
        let mut m = l;
        while m < n - 1 && e[m].abs() > eps * tst1 {
            m += 1;
        }
        if m > l {
            let mut iter = 0;
            loop {
                iter += 1;
                if iter > MAX_ITER {
                    return Err(EigenError::NoConvergence { index: l });
                }
                // The shift.
                let g = d[l];
                let mut p = (d[l + 1] - g) / (2.0 * e[l]);
                let mut r = p.hypot(1.0);
                if p < 0.0 {
                    r = -r;
                }
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                let dl1 = d[l + 1];
                let h = g - d[l];
                for di in d.iter_mut().take(n).skip(l + 2) {
                    *di -= h;
                }
                f += h;
                // The implicit QL sweep from m - 1 down to l.
                p = d[m];
                let mut c = 1.0;
                let mut c2 = c;
                let mut c3 = c;
                let el1 = e[l + 1];
                let mut s = 0.0;
                let mut s2 = 0.0;
                for i in (l..m).rev() {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    let g = c * e[i];
                    let h = c * p;
                    r = p.hypot(e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    if qt.is_some() {
                        rots.push((i, c, s));
                    }
                }
                if let Some(qt) = qt.as_deref_mut()
                    && rots.len() >= ROTATION_BATCH
                {
                    apply_rotations(qt, &rots);
                    rots.clear();
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
                if e[l].abs() <= eps * tst1 {
                    break;
                }
                if !p.is_finite() {
                    return Err(EigenError::NoConvergence { index: l });
                }
            }
        }
        d[l] += f;
        e[l] = 0.0;
    }
    if let Some(qt) = qt {
        apply_rotations(qt, &rots);
    }
    Ok(())
}

/// qt ← qt P_2 P_3 ⋯ P_{n-1}: the rows of qt, eigenvectors of the tridiagonal matrix, become
/// those of the original one. Blocks of BLOCK consecutive reflectors in the compact WY form
/// P_i0 ⋯ P_i1-1 = I - Vᵀ T V (V's rows the reflectors' u, T upper triangular; LAPACK's dlarft
/// "forward"), applied as qt ← qt - ((qt Vᵀ) T) V: three gemms per block.
fn back_transform(w: &[f64], hs: &[f64], qt: &mut [f64], n: usize) {
    const BLOCK: usize = 32;
    let mut i0 = 2;
    while i0 < n {
        let i1 = (i0 + BLOCK).min(n);
        let (b, m) = (i1 - i0, i1 - 1); // reflectors i0..i1, supported on columns 0..m
        let mut v = vec![0.0; b * m];
        let mut tau = vec![0.0; b];
        for j in 0..b {
            let i = i0 + j;
            if hs[i] != 0.0 {
                v[j * m..j * m + i].copy_from_slice(&w[i * n..i * n + i]);
                tau[j] = 1.0 / hs[i];
            }
        }
        // T[j][j] = tau_j, T[..j][j] = -tau_j T[..j][..j] (V[..j] · v_j).
        let mut t = vec![0.0; b * b];
        for j in 0..b {
            t[j * b + j] = tau[j];
            if tau[j] == 0.0 {
                continue;
            }
            let vj = &v[j * m..(j + 1) * m];
            let z: Vec<f64> = (0..j).map(|k| dot(&v[k * m..(k + 1) * m], vj)).collect();
            for k in 0..j {
                let tk: f64 = (k..j).map(|l| t[k * b + l] * z[l]).sum();
                t[k * b + j] = -tau[j] * tk;
            }
        }
        // Y = qt[:, :m] Vᵀ [n, b]; Z = -(Y T) [n, b]; qt[:, :m] += Z V.
        let mut y = vec![0.0; n * b];
        gemm_f64_into(n, b, m, &mut y, b, false, qt, n, 1, &v, 1, m);
        let mut z = vec![0.0; n * b];
        gemm_f64_into(n, b, b, &mut z, b, false, &y, b, 1, &t, b, 1);
        z.iter_mut().for_each(|x| *x = -*x);
        gemm_f64_into(n, m, b, qt, n, true, &z, b, 1, &v, m, 1);
        i0 = i1;
    }
}

/// Sorts the eigenvalues ascending, moving the rows of `qt` with them.
fn sort_ascending(d: &mut [f64], mut qt: Option<&mut [f64]>, n: usize) {
    for i in 0..n {
        let mut k = i;
        for j in i + 1..n {
            if d[j] < d[k] {
                k = j;
            }
        }
        if k != i {
            d.swap(i, k);
            if let Some(qt) = qt.as_deref_mut() {
                let (a, b) = qt.split_at_mut(k * n);
                a[i * n..(i + 1) * n].swap_with_slice(&mut b[..n]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numerics::rng::SplitMix64;

    fn random_symmetric(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = SplitMix64::new(seed);
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let v = rng.next_f64() * 2.0 - 1.0;
                a[i * n + j] = v;
                a[j * n + i] = v;
            }
        }
        a
    }

    /// Max |V Λ Vᵀ - A| / max |A| (with V's columns the eigenvectors) and max |V Vᵀ - I|.
    fn errors(a: &[f64], eig: &SymmetricEigen) -> (f64, f64) {
        let n = eig.n();
        let scale = a
            .iter()
            .fold(0.0f64, |m, x| m.max(x.abs()))
            .max(f64::MIN_POSITIVE);
        let (mut rec, mut orth) = (0.0f64, 0.0f64);
        for i in 0..n {
            for j in 0..n {
                let (mut r, mut o) = (0.0, 0.0);
                for k in 0..n {
                    r += eig.vectors[k * n + i] * eig.values[k] * eig.vectors[k * n + j];
                    o += eig.vectors[i * n + k] * eig.vectors[j * n + k];
                }
                rec = rec.max((r - a[i * n + j]).abs() / scale);
                orth = orth.max((o - if i == j { 1.0 } else { 0.0 }).abs());
            }
        }
        (rec, orth)
    }

    #[test]
    fn random_200_reconstructs_and_is_orthonormal() {
        // Measured: reconstruction ≤ 2.7e-14 (relative to max |A|), orthogonality ≤ 8.9e-15;
        // the values-only path gives the same bits.
        for (n, seed) in [(200, 7), (257, 11), (31, 3)] {
            let a = random_symmetric(n, seed);
            let eig = symmetric_eigen(&a, n).unwrap();
            let (rec, orth) = errors(&a, &eig);
            assert!(
                rec < 1e-10 && orth < 1e-10,
                "n {n}: rec {rec:e} orth {orth:e}"
            );
            assert!(eig.values.windows(2).all(|w| w[0] <= w[1]));
            let values = symmetric_eigenvalues(&a, n).unwrap();
            let diff = values
                .iter()
                .zip(&eig.values)
                .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
            assert!(diff < 1e-11, "{diff:e}");
            eprintln!(
                "n {n}: reconstruction {rec:e}, orthogonality {orth:e}, values only {diff:e}"
            );
            // The trace is the sum of the eigenvalues.
            let tr: f64 = (0..n).map(|i| a[i * n + i]).sum();
            assert!((tr - values.iter().sum::<f64>()).abs() < 1e-10);
        }
    }

    #[test]
    fn reads_the_lower_triangle_only() {
        let n = 40;
        let a = random_symmetric(n, 5);
        let mut b = a.clone();
        for i in 0..n {
            for j in i + 1..n {
                b[i * n + j] = 1e6;
            }
        }
        let (x, y) = (
            symmetric_eigen(&a, n).unwrap(),
            symmetric_eigen(&b, n).unwrap(),
        );
        assert_eq!(x.values, y.values);
    }

    #[test]
    fn degenerate_zero_and_tiny_matrices() {
        // Zero matrix.
        let eig = symmetric_eigen(&[0.0; 9], 3).unwrap();
        assert_eq!(eig.values, vec![0.0; 3]);
        assert!(errors(&[0.0; 9], &eig).1 < 1e-15);
        // 1 × 1 and 0 × 0.
        let eig = symmetric_eigen(&[-2.5], 1).unwrap();
        assert_eq!(
            (eig.values.clone(), eig.vectors.clone()),
            (vec![-2.5], vec![1.0])
        );
        assert!(symmetric_eigen(&[], 0).unwrap().values.is_empty());
        // Identity (already diagonal), a repeated eigenvalue, a rank-one matrix.
        let n = 50;
        let mut id = vec![0.0; n * n];
        (0..n).for_each(|i| id[i * n + i] = 3.0);
        let eig = symmetric_eigen(&id, n).unwrap();
        assert!(eig.values.iter().all(|&v| v == 3.0));
        assert!(errors(&id, &eig).1 < 1e-14);
        // Q diag(1,1,1,5,5,...) Qᵀ built from a random orthogonal Q: eigenvalues with
        // multiplicity, vectors still orthonormal.
        let q = symmetric_eigen(&random_symmetric(n, 9), n).unwrap().vectors;
        let lam: Vec<f64> = (0..n).map(|i| if i < n / 2 { 1.0 } else { 5.0 }).collect();
        let mut m = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                m[i * n + j] = (0..n).map(|k| q[k * n + i] * lam[k] * q[k * n + j]).sum();
            }
        }
        let eig = symmetric_eigen(&m, n).unwrap();
        let (rec, orth) = errors(&m, &eig);
        assert!(rec < 1e-12 && orth < 1e-12, "{rec:e} {orth:e}");
        for (v, l) in eig.values.iter().zip(&lam) {
            assert!((v - l).abs() < 1e-12);
        }
        let u: Vec<f64> = (0..n).map(|i| (i as f64 - 20.0) / 10.0).collect();
        let r1: Vec<f64> = (0..n * n).map(|k| u[k / n] * u[k % n]).collect();
        let eig = symmetric_eigen(&r1, n).unwrap();
        let uu: f64 = u.iter().map(|x| x * x).sum();
        assert!((eig.values[n - 1] - uu).abs() < 1e-12 * uu);
        assert!(eig.values[..n - 1].iter().all(|v| v.abs() < 1e-12 * uu));
        assert!(errors(&r1, &eig).0 < 1e-13);
    }

    #[test]
    fn a_large_matrix_takes_the_parallel_paths() {
        // Parallel reduction and panels, a last panel of 24 columns, 19 WY blocks, and ~3
        // batches of rotations (~3.7e5 of them: ~n² in all).
        let n = 600;
        let a = random_symmetric(n, 13);
        let eig = symmetric_eigen(&a, n).unwrap();
        let (rec, orth) = errors(&a, &eig);
        assert!(rec < 1e-10 && orth < 1e-10, "rec {rec:e} orth {orth:e}");
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(
            symmetric_eigen(&[1.0; 5], 2).unwrap_err(),
            EigenError::Shape { len: 5, n: 2 }
        );
        let mut a = vec![1.0; 9];
        a[7] = f64::NAN;
        assert_eq!(
            symmetric_eigenvalues(&a, 3).unwrap_err(),
            EigenError::NotFinite { row: 2, col: 1 }
        );
        // Upper triangle is not read: a NaN there is ignored.
        a[7] = 1.0;
        a[5] = f64::NAN;
        assert!(symmetric_eigenvalues(&a, 3).is_ok());
    }
}
