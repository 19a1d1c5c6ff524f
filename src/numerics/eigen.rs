//! Eigendecomposition of a dense real symmetric matrix in f64: Householder reduction to
//! tridiagonal form, then the implicit QL algorithm with Wilkinson shifts (EISPACK's tred2 and
//! tql2, as in JAMA), rearranged for row-major storage and rayon.
//!
//! Layout: the reduction works on full rows (each reflector's matrix-vector product and rank-2
//! update run over the rows of the leading block, in parallel when it is large); the QL
//! rotations are applied to the *rows* of Qᵀ (two contiguous rows per rotation), the rotations
//! of one QL sweep recorded and then applied to column bands of Qᵀ in parallel; the reflectors
//! are applied afterwards to bands of rows of Qᵀ, all reflectors per band. The result's
//! `vectors` are therefore stored one eigenvector per row. Only the lower triangle of the input
//! is read. Cost ~ (8/3 + 4.5 + 2) n³ flops with vectors, (8/3) n³ for eigenvalues alone.

use rayon::prelude::*;

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
    let mut d = vec![0.0; n];
    let mut e = vec![0.0; n];
    let mut hs = vec![0.0; n];
    tridiagonalize(&mut w, n, &mut d, &mut e, &mut hs);
    let mut q = vec![0.0; n * n];
    for i in 0..n {
        q[i * n + i] = 1.0;
    }
    tridiagonal_ql(&mut d, &mut e, Some(&mut q), n)?;
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

fn dot(x: &[f64], y: &[f64]) -> f64 {
    // Four accumulators: vectorizes, and is the same for every caller (deterministic).
    let mut acc = [0.0f64; 4];
    let mut xc = x.chunks_exact(4);
    let mut yc = y.chunks_exact(4);
    for (a, b) in (&mut xc).zip(&mut yc) {
        for t in 0..4 {
            acc[t] += a[t] * b[t];
        }
    }
    let mut s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
    for (a, b) in xc.remainder().iter().zip(yc.remainder()) {
        s += a * b;
    }
    s
}

/// Householder reduction of the full symmetric `w` (row-major n × n) to tridiagonal form, from
/// the last row up. On return `d` is the diagonal, `e[i]` the entry (i, i-1) (`e[0]` = 0), and
/// for i ≥ 2 with `hs[i]` ≠ 0 row i of `w` holds in its first i entries the Householder vector u
/// of the reflector P_i = I - u uᵀ / hs[i] that zeroed row i left of the subdiagonal:
/// T = P_2 ⋯ P_{n-1} A P_{n-1} ⋯ P_2.
fn tridiagonalize(w: &mut [f64], n: usize, d: &mut [f64], e: &mut [f64], hs: &mut [f64]) {
    let mut p = vec![0.0; n];
    for i in (1..n).rev() {
        let (top, rest) = w.split_at_mut(i * n);
        let row = &mut rest[..i];
        if i == 1 {
            e[1] = row[0];
            continue;
        }
        let scale: f64 = row.iter().map(|x| x.abs()).sum();
        if scale == 0.0 {
            e[i] = 0.0;
            hs[i] = 0.0;
            continue;
        }
        row.iter_mut().for_each(|x| *x /= scale);
        let sigma = dot(row, row);
        let f = row[i - 1];
        let g = if f >= 0.0 {
            -sigma.sqrt()
        } else {
            sigma.sqrt()
        };
        e[i] = scale * g;
        let h = sigma - f * g;
        row[i - 1] = f - g;
        hs[i] = h;
        let u: &[f64] = row;
        // p = B u / h over the leading i × i block B, then q = p - K u, B -= u qᵀ + q uᵀ.
        let p = &mut p[..i];
        let matvec = |(r, pj): (&[f64], &mut f64)| *pj = dot(&r[..i], u) / h;
        if i >= PARALLEL_MIN {
            top.par_chunks(n).zip(p.par_iter_mut()).for_each(matvec);
        } else {
            top.chunks(n).zip(p.iter_mut()).for_each(matvec);
        }
        let k = dot(u, p) / (2.0 * h);
        p.iter_mut().zip(u).for_each(|(pj, &uj)| *pj -= k * uj);
        let q: &[f64] = p;
        // The sum inside the parentheses is the same for (j, k) and (k, j): B stays symmetric.
        let update = |(r, (&uj, &qj)): (&mut [f64], (&f64, &f64))| {
            for ((b, &uk), &qk) in r[..i].iter_mut().zip(u).zip(q) {
                *b -= uj * qk + qj * uk;
            }
        };
        if i >= PARALLEL_MIN {
            top.par_chunks_mut(n)
                .zip(u.par_iter().zip(q.par_iter()))
                .for_each(update);
        } else {
            top.chunks_mut(n).zip(u.iter().zip(q)).for_each(update);
        }
    }
    for i in 0..n {
        d[i] = w[i * n + i];
    }
    if n > 0 {
        e[0] = 0.0;
    }
}

/// A raw pointer shared by tasks that write disjoint column bands of the same rows.
#[derive(Clone, Copy)]
struct Shared(*mut f64);
// SAFETY: every task writes a column band no other task touches.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

/// Rotations (row i, c, s) of one QL sweep, applied in order to rows i and i + 1 of qt.
fn apply_rotations(qt: &mut [f64], n: usize, rots: &[(usize, f64, f64)]) {
    const BAND: usize = 128;
    let rotate = |ptr: Shared, c0: usize, c1: usize| {
        for &(i, c, s) in rots {
            // SAFETY: rows i and i + 1 < n, columns c0..c1 within the row; bands are disjoint.
            let (ri, ri1) = unsafe {
                (
                    std::slice::from_raw_parts_mut(ptr.0.add(i * n + c0), c1 - c0),
                    std::slice::from_raw_parts_mut(ptr.0.add((i + 1) * n + c0), c1 - c0),
                )
            };
            for (a, b) in ri.iter_mut().zip(ri1.iter_mut()) {
                let h = *b;
                *b = s * *a + c * h;
                *a = c * *a - s * h;
            }
        }
    };
    let ptr = Shared(qt.as_mut_ptr());
    if n >= PARALLEL_MIN && rots.len() * n >= 1 << 15 {
        (0..n.div_ceil(BAND))
            .into_par_iter()
            .for_each(|b| rotate(ptr, b * BAND, ((b + 1) * BAND).min(n)));
    } else {
        rotate(ptr, 0, n);
    }
}

/// Implicit QL with Wilkinson shifts on the tridiagonal (d, e) (JAMA's tql2). With `qt`
/// (the identity on entry), its rows become the eigenvectors of the tridiagonal matrix.
fn tridiagonal_ql(
    d: &mut [f64],
    e: &mut [f64],
    mut qt: Option<&mut [f64]>,
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
                rots.clear();
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
                if let Some(qt) = qt.as_deref_mut() {
                    apply_rotations(qt, n, &rots);
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
    Ok(())
}

/// qt ← qt P_2 P_3 ⋯ P_{n-1}: the rows of qt, eigenvectors of the tridiagonal matrix, become
/// those of the original one. Bands of rows in parallel, every reflector applied to a band
/// while it is in cache.
fn back_transform(w: &[f64], hs: &[f64], qt: &mut [f64], n: usize) {
    const BAND: usize = 16;
    if n < 3 {
        return; // no reflector
    }
    let band = |rows: &mut [f64]| {
        for i in 2..n {
            let h = hs[i];
            if h == 0.0 {
                continue;
            }
            let u = &w[i * n..i * n + i];
            for r in rows.chunks_mut(n) {
                let t = dot(&r[..i], u) / h;
                r[..i].iter_mut().zip(u).for_each(|(x, &ui)| *x -= t * ui);
            }
        }
    };
    if n >= PARALLEL_MIN {
        qt.par_chunks_mut(BAND * n).for_each(band);
    } else {
        qt.chunks_mut(BAND * n).for_each(band);
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
        let n = 400;
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
