//! Small dense f64 helpers for the similarity metrics (row-major): products over
//! `numerics::matrix::gemm_f64`, principal submatrices, a semidefinite Cholesky and forward
//! substitution, the
//! inverse square root of a symmetric matrix.

use crate::numerics::eigen::{EigenError, SymmetricEigen, symmetric_eigen};
use crate::numerics::matrix::gemm_f64;

/// a [m, k] · b [k, n].
pub(crate) fn mul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    gemm_f64(m, n, k, &mut c, false, a, k, 1, b, n, 1);
    c
}

/// a [m, k] · bᵀ with b [n, k].
pub(crate) fn mul_nt(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    gemm_f64(m, n, k, &mut c, false, a, k, 1, b, 1, k);
    c
}

/// aᵀ · b with a [k, m], b [k, n] (e.g. Xᵀ Y of two datapoints × neurons matrices).
pub(crate) fn mul_tn(a: &[f64], b: &[f64], k: usize, m: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    gemm_f64(m, n, k, &mut c, false, a, 1, m, b, n, 1);
    c
}

/// c [m, n] += aᵀ · b with a [k, m], b [k, n].
pub(crate) fn add_mul_tn(c: &mut [f64], a: &[f64], b: &[f64], k: usize, m: usize, n: usize) {
    gemm_f64(m, n, k, c, true, a, 1, m, b, n, 1);
}

/// The rows `rows` and columns `cols` of x [_, width], scaled by `scale`.
pub(crate) fn select(
    x: &[f64],
    width: usize,
    rows: &[usize],
    cols: &[usize],
    scale: f64,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(rows.len() * cols.len());
    for &i in rows {
        let r = &x[i * width..(i + 1) * width];
        out.extend(cols.iter().map(|&j| r[j] * scale));
    }
    out
}

/// Frobenius norm squared.
pub(crate) fn frob2(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum()
}

/// The lower Cholesky factor of the symmetric positive semidefinite g [n, n] (its lower
/// triangle read), in place (upper triangle zeroed). A pivot at most `rel_tol` times its
/// diagonal entry marks a row dependent on the ones before (Gram-Schmidt would find nothing
/// left of it): its diagonal entry and the column below it are set to 0. Returns those rows.
pub(crate) fn cholesky_semidefinite(g: &mut [f64], n: usize, rel_tol: f64) -> Vec<bool> {
    let mut dependent = vec![false; n];
    for i in 0..n {
        let gii = g[i * n + i];
        for j in 0..=i {
            let (li, lj) = (&g[i * n..i * n + j], &g[j * n..j * n + j]);
            let s = g[i * n + j] - li.iter().zip(lj).map(|(x, y)| x * y).sum::<f64>();
            if i == j {
                if s.is_nan() || s <= rel_tol * gii {
                    dependent[i] = true;
                    g[i * n + i] = 0.0;
                } else {
                    g[i * n + i] = s.sqrt();
                }
            } else if dependent[j] {
                g[i * n + j] = 0.0;
            } else {
                g[i * n + j] = s / g[j * n + j];
            }
        }
        g[i * n + i + 1..(i + 1) * n].fill(0.0);
    }
    dependent
}

/// b [n, m] ← L⁻¹ b for the lower triangular l [n, n] (forward substitution by rows); a row whose
/// diagonal entry is 0 (a dependent row of `cholesky_semidefinite`) becomes 0.
pub(crate) fn solve_lower(l: &[f64], n: usize, b: &mut [f64], m: usize) {
    for i in 0..n {
        let (done, rest) = b.split_at_mut(i * m);
        let bi = &mut rest[..m];
        let d = l[i * n + i];
        if d == 0.0 {
            bi.fill(0.0);
            continue;
        }
        for (j, bj) in done.chunks_exact(m).enumerate() {
            let lij = l[i * n + j];
            if lij != 0.0 {
                bi.iter_mut().zip(bj).for_each(|(x, &y)| *x -= lij * y);
            }
        }
        bi.iter_mut().for_each(|x| *x /= d);
    }
}

/// (s + shift I)^(-1/2) for the symmetric positive semidefinite s [n, n], from its
/// eigendecomposition (returned too). Directions whose eigenvalue + shift is not positive get 0
/// (as a pseudo-inverse would).
pub(crate) fn inv_sqrt(eig: &SymmetricEigen, shift: f64) -> Vec<f64> {
    let n = eig.n();
    // Y = diag((λ + shift)^(-1/4)) V, then Yᵀ Y = Vᵀ diag((λ + shift)^(-1/2)) V.
    let mut y = eig.vectors.clone();
    for (r, &l) in y.chunks_mut(n.max(1)).zip(&eig.values) {
        let v = l + shift;
        let f = if v > 0.0 { v.powf(-0.25) } else { 0.0 };
        r.iter_mut().for_each(|x| *x *= f);
    }
    mul_tn(&y, &y, n, n, n)
}

/// The eigendecomposition of a symmetric matrix.
pub(crate) fn eigen(s: &[f64], n: usize) -> Result<SymmetricEigen, EigenError> {
    symmetric_eigen(s, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_cholesky_and_solve() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2 x 3
        let b = [1.0, 0.0, 2.0, 1.0, 0.0, 3.0]; // 3 x 2
        assert_eq!(mul(&a, &b, 2, 3, 2), vec![5.0, 11.0, 14.0, 23.0]);
        assert_eq!(mul_nt(&a, &a, 2, 3, 2), vec![14.0, 32.0, 32.0, 77.0]);
        assert_eq!(mul_tn(&a, &a, 2, 3, 3)[..3], [17.0, 22.0, 27.0]);
        let mut g = vec![4.0, 2.0, 2.0, 2.0, 5.0, 1.0, 2.0, 1.0, 6.0];
        let g0 = g.clone();
        assert_eq!(cholesky_semidefinite(&mut g, 3, 1e-10), vec![false; 3]);
        let llt = mul_nt(&g, &g, 3, 3, 3);
        for (x, y) in llt.iter().zip(&g0) {
            assert!((x - y).abs() < 1e-14);
        }
        let mut x = g0.clone();
        solve_lower(&g, 3, &mut x, 3);
        // L⁻¹ G = Lᵀ.
        for i in 0..3 {
            for j in 0..3 {
                assert!((x[i * 3 + j] - g[j * 3 + i]).abs() < 1e-14);
            }
        }
        // A rank-one matrix: the second row depends on the first.
        let mut r1 = [4.0, 2.0, 2.0, 1.0];
        assert_eq!(cholesky_semidefinite(&mut r1, 2, 1e-10), vec![false, true]);
        assert_eq!(r1, [2.0, 0.0, 1.0, 0.0]);
        let mut x = [1.0, 2.0];
        solve_lower(&r1, 2, &mut x, 1);
        assert_eq!(x, [0.5, 0.0]);
    }
}
