//! Tests of the similarity metrics: Ecco's values (tests/data/golden/similarity, made by
//! scripts/make_similarity_goldens.py), the streaming accumulators against the in-memory
//! functions, invariances, and bad input.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;

use super::cca::{canonical, prepare};
use super::moments::{LayerStats, centred};
use super::*;
use crate::numerics::eigen::symmetric_eigen;
use crate::numerics::rng::SplitMix64;

/// A layer of the golden: n × width f32 values.
struct Layer {
    width: usize,
    data: Vec<f32>,
}

struct Case {
    name: String,
    positions: usize,
    layers: HashMap<String, Layer>,
    pairs: Vec<serde_json::Value>,
    minibatch: serde_json::Value,
}

fn golden() -> Vec<Case> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden/similarity/similarity.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let scale = 256.0f32; // the script's SCALE
    assert_eq!(
        doc["encoding"],
        "int16 little-endian, base64; value = int / 256"
    );
    doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let layers = c["layers"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(v["data"].as_str().unwrap())
                        .unwrap();
                    let data = bytes
                        .chunks_exact(2)
                        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / scale)
                        .collect();
                    let width = v["width"].as_u64().unwrap() as usize;
                    (k.clone(), Layer { width, data })
                })
                .collect();
            Case {
                name: c["name"].as_str().unwrap().into(),
                positions: c["positions"].as_u64().unwrap() as usize,
                layers,
                pairs: c["pairs"].as_array().unwrap().clone(),
                minibatch: c["minibatch"].clone(),
            }
        })
        .collect()
}

fn acts(l: &Layer) -> Activations<'_, f32> {
    Activations::new(&l.data, l.width).unwrap()
}

/// Pushes every layer of both sides in the uneven chunks `sizes` (cycled) of `n` positions.
fn push_chunks(
    n: usize,
    sizes: &[usize],
    a: &[(&[f32], usize)],
    b: &[(&[f32], usize)],
    mut push: impl FnMut(&[&[f32]], &[&[f32]]),
) {
    let mut start = 0;
    for &size in sizes.iter().cycle() {
        if start >= n {
            break;
        }
        let end = (start + size).min(n);
        let cut = |side: &[(&[f32], usize)]| -> Vec<Vec<f32>> {
            side.iter()
                .map(|(x, d)| x[start * d..end * d].to_vec())
                .collect()
        };
        let (ca, cb) = (cut(a), cut(b));
        let ra: Vec<&[f32]> = ca.iter().map(|v| &v[..]).collect();
        let rb: Vec<&[f32]> = cb.iter().map(|v| &v[..]).collect();
        push(&ra, &rb);
        start = end;
    }
}

/// Ecco's values within 1e-5. Measured worst |error| (2026-11-30), in memory and streamed alike:
/// svcca 6.5e-15, cka 2.6e-15, cka_debiased 1.0e-15; cca 2.4e-14 and pwcca 1.0e-12 except on
/// a0dup (a duplicated neuron: singular covariance), where they are 4.1e-7 and 6.8e-6 because
/// Ecco's pinv-then-eigh inverse square root loses digits there: against the same steps with
/// eigh (the golden's `cca_eigh`, `pwcca_eigh`) every pair is within 2.0e-12.
#[test]
fn in_memory_and_streaming_match_ecco() {
    const TOL: f64 = 1e-5;
    let mut worst: HashMap<&str, f64> = HashMap::new();
    let mut eigh_worst = 0.0f64;
    let mut check = |metric: &'static str, got: f64, want: f64, ctx: &str| {
        let err = (got - want).abs();
        assert!(err < TOL, "{ctx} {metric}: {got} vs Ecco {want}");
        let w = worst.entry(metric).or_insert(0.0);
        *w = w.max(err);
    };
    for case in golden() {
        let names: Vec<&String> = {
            let mut v: Vec<&String> = case.layers.keys().collect();
            v.sort();
            v
        };
        let index = |k: &str| names.iter().position(|n| *n == k).unwrap();
        let full = case.pairs[0].get("cca").is_some();
        let mut pairs = Vec::new();
        for p in &case.pairs {
            let (ka, kb) = (p["a"].as_str().unwrap(), p["b"].as_str().unwrap());
            let (a, b) = (acts(&case.layers[ka]), acts(&case.layers[kb]));
            let ctx = format!("{} {ka} {kb}", case.name);
            let want = |m: &str| p[m].as_f64().unwrap();
            check("cka", linear_cka(a, b).unwrap(), want("cka"), &ctx);
            check(
                "cka_debiased",
                linear_cka_unbiased(a, b).unwrap(),
                want("cka_debiased"),
                &ctx,
            );
            if full {
                let (c, pw) = (cca(a, b).unwrap(), pwcca(a, b).unwrap());
                check("cca", c, want("cca"), &ctx);
                check("svcca", svcca(a, b, 20).unwrap(), want("svcca_20"), &ctx);
                check("svcca", svcca(a, b, 8).unwrap(), want("svcca_8"), &ctx);
                check("pwcca", pw, want("pwcca"), &ctx);
                // Against Ecco's steps with an accurate inverse square root: far closer where
                // Ecco's pinv loses digits (the singular covariance of a0dup).
                for (name, got, key) in [("cca", c, "cca_eigh"), ("pwcca", pw, "pwcca_eigh")] {
                    let err = (got - want(key)).abs();
                    assert!(err < 1e-9, "{ctx} {name}: {got} vs {key} {}", want(key));
                    eigh_worst = eigh_worst.max(err);
                }
            }
            pairs.push((index(ka), index(kb)));
        }
        // The same pairs from the accumulator, every layer on both sides, in uneven chunks.
        let widths: Vec<usize> = names.iter().map(|k| case.layers[*k].width).collect();
        let side: Vec<(&[f32], usize)> = names
            .iter()
            .map(|k| (&case.layers[*k].data[..], case.layers[*k].width))
            .collect();
        let mut acc = CovarianceAccumulator::new(&widths, &widths, &pairs).unwrap();
        push_chunks(case.positions, &[7, 100, 1, 61], &side, &side, |a, b| {
            acc.push(a, b).unwrap()
        });
        assert_eq!(acc.positions(), case.positions);
        let metrics = if full {
            vec![Metric::Cka, Metric::Cca, Metric::Svcca, Metric::Pwcca]
        } else {
            vec![Metric::Cka]
        };
        for dims in [20, 8] {
            let opts = MomentOptions {
                metrics: metrics.clone(),
                svcca_dims: dims,
                epsilon: EPSILON,
            };
            let values = acc.finish(&opts).unwrap();
            assert_eq!(values.len(), pairs.len() * metrics.len());
            for v in values {
                let p = &case.pairs[pairs
                    .iter()
                    .position(|&q| q == (v.layer_a, v.layer_b))
                    .unwrap()];
                let ctx = format!("{} streamed {} {}", case.name, p["a"], p["b"]);
                let key = match v.metric {
                    Metric::Svcca => format!("svcca_{dims}"),
                    m => m.as_str().to_string(),
                };
                let name = match v.metric {
                    Metric::Cka => "cka (streamed)",
                    Metric::Cca => "cca (streamed)",
                    Metric::Svcca => "svcca (streamed)",
                    _ => "pwcca (streamed)",
                };
                check(name, v.value, p[&key].as_f64().unwrap(), &ctx);
            }
        }
    }
    eprintln!("worst errors against Ecco: {worst:?}; against the eigh route: {eigh_worst:e}");
}

/// The NumPy minibatch CKA within 1e-5 (measured worst: 5.6e-16), pushed in uneven chunks that
/// straddle batches.
#[test]
fn minibatch_matches_numpy() {
    for case in golden() {
        let mb = &case.minibatch;
        let batch = mb["batch"].as_u64().unwrap() as usize;
        let side = |key: &str| -> Vec<&Layer> {
            mb[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| &case.layers[k.as_str().unwrap()])
                .collect()
        };
        let (la, lb) = (side("side_a"), side("side_b"));
        let wa: Vec<usize> = la.iter().map(|l| l.width).collect();
        let wb: Vec<usize> = lb.iter().map(|l| l.width).collect();
        let mut acc = MinibatchCka::new(&wa, &wb, batch).unwrap();
        let sa: Vec<(&[f32], usize)> = la.iter().map(|l| (&l.data[..], l.width)).collect();
        let sb: Vec<(&[f32], usize)> = lb.iter().map(|l| (&l.data[..], l.width)).collect();
        push_chunks(
            case.positions,
            &[5, batch + 3, 2 * batch - 1, 1],
            &sa,
            &sb,
            |a, b| acc.push(a, b).unwrap(),
        );
        let r = acc.finish().unwrap();
        assert_eq!(r.batches as u64, mb["batches"].as_u64().unwrap());
        assert_eq!(r.positions_dropped as u64, mb["dropped"].as_u64().unwrap());
        assert_eq!(r.positions_used + r.positions_dropped, case.positions);
        let want = mb["cka"].as_array().unwrap();
        let mut worst = 0.0f64;
        for v in &r.values {
            assert_eq!(v.metric, Metric::CkaMinibatch);
            let w = want[v.layer_a][v.layer_b].as_f64().unwrap();
            worst = worst.max((v.value - w).abs());
            assert!((v.value - w).abs() < 1e-5, "{} {v:?} vs {w}", case.name);
        }
        assert_eq!(r.values.len(), wa.len() * wb.len());
        eprintln!("{}: minibatch worst error {worst:e}", case.name);
    }
}

/// n × d activations with structure: a latent of `k` dims mixed in, noise, neuron offsets
/// `offset` (large offsets test the accumulators' shifted sums).
fn random_layer(rng: &mut SplitMix64, latent: &[f64], k: usize, d: usize, offset: f64) -> Vec<f32> {
    let n = latent.len() / k;
    let mut normal = || (0..4).map(|_| rng.next_f64()).sum::<f64>() - 2.0;
    let mix: Vec<f64> = (0..k * d).map(|_| normal()).collect();
    let offs: Vec<f64> = (0..d).map(|_| offset * (1.0 + normal())).collect();
    let mut out = Vec::with_capacity(n * d);
    for i in 0..n {
        for j in 0..d {
            let z: f64 = (0..k).map(|t| latent[i * k + t] * mix[t * d + j]).sum();
            out.push((z + 0.5 * normal() + offs[j]) as f32);
        }
    }
    out
}

fn latent(rng: &mut SplitMix64, n: usize, k: usize) -> Vec<f64> {
    (0..n * k)
        .map(|_| (0..4).map(|_| rng.next_f64()).sum::<f64>() - 2.0)
        .collect()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

/// Streaming == in memory (relative 1e-9) on data with large neuron means, several widths,
/// pushed in uneven chunks. Measured worst relative difference: 2.7e-15.
#[test]
fn streaming_equals_in_memory() {
    let mut rng = SplitMix64::new(17);
    let n = 400;
    let z = latent(&mut rng, n, 6);
    let wa = [12, 20, 9];
    let wb = [16, 7];
    let la: Vec<Vec<f32>> = wa
        .iter()
        .map(|&d| random_layer(&mut rng, &z, 6, d, 300.0))
        .collect();
    let lb: Vec<Vec<f32>> = wb
        .iter()
        .map(|&d| random_layer(&mut rng, &z, 6, d, 0.0))
        .collect();
    let pairs = [(0, 0), (2, 1), (1, 0), (0, 1), (2, 0)];
    let mut acc = CovarianceAccumulator::new(&wa, &wb, &pairs).unwrap();
    let sa: Vec<(&[f32], usize)> = la.iter().zip(wa).map(|(x, d)| (&x[..], d)).collect();
    let sb: Vec<(&[f32], usize)> = lb.iter().zip(wb).map(|(x, d)| (&x[..], d)).collect();
    push_chunks(n, &[33, 1, 150, 2, 97], &sa, &sb, |a, b| {
        acc.push(a, b).unwrap()
    });
    let opts = MomentOptions {
        svcca_dims: 5,
        ..MomentOptions::default()
    };
    let values = acc.finish(&opts).unwrap();
    let mut worst = 0.0f64;
    for v in values {
        let a = Activations::new(&la[v.layer_a], wa[v.layer_a]).unwrap();
        let b = Activations::new(&lb[v.layer_b], wb[v.layer_b]).unwrap();
        let want = match v.metric {
            Metric::Cka => linear_cka(a, b),
            Metric::Cca => cca(a, b),
            Metric::Svcca => svcca(a, b, 5),
            Metric::Pwcca => pwcca(a, b),
            Metric::CkaMinibatch => unreachable!(),
        }
        .unwrap();
        worst = worst.max(rel(v.value, want));
        assert!(rel(v.value, want) < 1e-9, "{v:?} vs {want}");
    }
    eprintln!("streaming vs in memory: worst relative {worst:e}");
}

/// Ecco's svcca projects on s·V of the SVD; the moments path uses the covariance's top
/// eigenvectors. Project the data explicitly on those and run CCA on the projections (mean of
/// all coefficients, as svcca): the same value.
#[test]
fn svcca_equals_cca_on_explicit_projections() {
    let mut rng = SplitMix64::new(5);
    let n = 250;
    let z = latent(&mut rng, n, 4);
    let (da, db, dims) = (14, 11, 6);
    let xa = random_layer(&mut rng, &z, 4, da, 2.0);
    let xb = random_layer(&mut rng, &z, 4, db, -1.0);
    let project = |x: &[f32], d: usize| -> Vec<f64> {
        let xc = centred(Activations::new(x, d).unwrap(), "x").unwrap();
        let stats = LayerStats::from_centred(&xc, d, n);
        let eig = symmetric_eigen(&stats.cov, d).unwrap();
        let mut out = vec![0.0; n * dims];
        for i in 0..n {
            for k in 0..dims {
                let u = eig.vector(d - 1 - k);
                out[i * dims + k] = (0..d).map(|j| xc[i * d + j] * u[j]).sum();
            }
        }
        out
    };
    let (pa, pb) = (project(&xa, da), project(&xb, db));
    let stats = |p: &[f64]| {
        let c = centred(Activations::new(p, dims).unwrap(), "p").unwrap();
        (LayerStats::from_centred(&c, dims, n), c)
    };
    let ((sa, ca), (sb, cb)) = (stats(&pa), stats(&pb));
    let cross = super::moments::cross_cov(&ca, &cb, n, dims, dims);
    let prep_a = prepare(&sa, true, None, EPSILON, "a").unwrap();
    let prep_b = prepare(&sb, true, None, EPSILON, "b").unwrap();
    let can = canonical(
        prep_a.cca.as_ref().unwrap(),
        prep_b.cca.as_ref().unwrap(),
        &cross,
        dims,
        false,
        "x",
    )
    .unwrap()
    .unwrap();
    let explicit = can.s.iter().sum::<f64>() / can.s.len() as f64;
    let got = svcca(
        Activations::new(&xa, da).unwrap(),
        Activations::new(&xb, db).unwrap(),
        dims,
    )
    .unwrap();
    assert!(rel(got, explicit) < 1e-10, "{got} vs {explicit}");
    // The projections' covariance is diagonal (the eigenvalues).
    let off = (0..dims)
        .flat_map(|i| (0..dims).filter(move |&j| j != i).map(move |j| (i, j)))
        .map(|(i, j)| sa.cov[i * dims + j].abs())
        .fold(0.0, f64::max);
    assert!(off < 1e-10 * sa.cov[0], "{off}");
}

/// A random orthogonal d × d matrix (row-major), from an eigendecomposition.
fn orthogonal(rng: &mut SplitMix64, d: usize) -> Vec<f64> {
    let mut s = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let v = rng.next_f64() - 0.5;
            s[i * d + j] = v;
            s[j * d + i] = v;
        }
    }
    symmetric_eigen(&s, d).unwrap().vectors
}

fn times(x: &[f32], n: usize, d: usize, m: &[f64], e: usize, scale: f64) -> Vec<f64> {
    let mut out = vec![0.0; n * e];
    for i in 0..n {
        for k in 0..e {
            out[i * e + k] = scale
                * (0..d)
                    .map(|j| x[i * d + j] as f64 * m[j * e + k])
                    .sum::<f64>();
        }
    }
    out
}

#[test]
fn identical_inputs_and_invariances() {
    let mut rng = SplitMix64::new(23);
    let n = 300;
    let z = latent(&mut rng, n, 5);
    let (da, db) = (10, 13);
    let xa = random_layer(&mut rng, &z, 5, da, 1.0);
    let xb = random_layer(&mut rng, &z, 5, db, 4.0);
    let a = Activations::new(&xa, da).unwrap();
    let b = Activations::new(&xb, db).unwrap();
    // Identical inputs.
    for (name, v) in [
        ("cka", linear_cka(a, a).unwrap()),
        ("cka_unbiased", linear_cka_unbiased(a, a).unwrap()),
        ("cca", cca(a, a).unwrap()),
        ("svcca", svcca(a, a, 4).unwrap()),
        ("pwcca", pwcca(a, a).unwrap()),
    ] {
        assert!((v - 1.0).abs() < 1e-9, "{name}: {v}");
    }
    // Every metric: a constant shift of one side's neurons.
    let shifted: Vec<f64> = xb
        .iter()
        .enumerate()
        .map(|(i, &v)| v as f64 + (i % db) as f64 * 10.0 - 40.0)
        .collect();
    let bs = Activations::new(&shifted, db).unwrap();
    for (name, x, y) in [
        ("cka", linear_cka(a, b), linear_cka(a, bs)),
        (
            "cka_unbiased",
            linear_cka_unbiased(a, b),
            linear_cka_unbiased(a, bs),
        ),
        ("cca", cca(a, b), cca(a, bs)),
        ("svcca", svcca(a, b, 4), svcca(a, bs, 4)),
        ("pwcca", pwcca(a, b), pwcca(a, bs)),
        ("pwcca (second side)", pwcca(b, a), pwcca(bs, a)),
    ] {
        let (x, y) = (x.unwrap(), y.unwrap());
        assert!(rel(y, x) < 1e-9, "{name}: {y} vs {x}");
    }
    // CKA: orthogonal transform and isotropic scaling of one side.
    let q = orthogonal(&mut rng, db);
    let bq = times(&xb, n, db, &q, db, 3.7);
    let bq = Activations::new(&bq, db).unwrap();
    let (want, got) = (linear_cka(a, b).unwrap(), linear_cka(a, bq).unwrap());
    assert!(rel(got, want) < 1e-10, "cka: {got} vs {want}");
    let (want, got) = (
        linear_cka_unbiased(a, b).unwrap(),
        linear_cka_unbiased(a, bq).unwrap(),
    );
    assert!(rel(got, want) < 1e-10, "cka_unbiased: {got} vs {want}");
    // CCA family: an invertible (well-conditioned, non-orthogonal) linear map of one side.
    let mut m = orthogonal(&mut rng, db);
    for (i, r) in m.chunks_mut(db).enumerate() {
        r.iter_mut().for_each(|v| *v *= 1.0 + i as f64 / db as f64);
    }
    let m = times(&xb, n, db, &m, db, 1.0);
    let bm = Activations::new(&m, db).unwrap();
    let (want, got) = (cca(a, b).unwrap(), cca(a, bm).unwrap());
    assert!(rel(got, want) < 1e-8, "cca {got} vs {want}");
}

#[test]
fn minibatch_with_one_batch_is_the_unbiased_cka() {
    let mut rng = SplitMix64::new(8);
    let n = 64;
    let z = latent(&mut rng, n, 3);
    let xa = random_layer(&mut rng, &z, 3, 20, 5.0);
    let xb = random_layer(&mut rng, &z, 3, 90, 0.0);
    let mut acc = MinibatchCka::new(&[20], &[90], n).unwrap();
    acc.push(&[&xa[..]], &[&xb[..]]).unwrap();
    let got = acc.finish().unwrap().values[0].value;
    let want = linear_cka_unbiased(
        Activations::new(&xa, 20).unwrap(),
        Activations::new(&xb, 90).unwrap(),
    )
    .unwrap();
    assert!(rel(got, want) < 1e-10, "{got} vs {want}");
}

#[test]
fn constant_side_gives_eccos_zero_result() {
    let mut rng = SplitMix64::new(1);
    let n = 50;
    let z = latent(&mut rng, n, 2);
    let x = random_layer(&mut rng, &z, 2, 4, 0.0);
    let c = vec![2.5f32; n * 3];
    let (a, b) = (
        Activations::new(&x, 4).unwrap(),
        Activations::new(&c, 3).unwrap(),
    );
    assert_eq!(cca(a, b).unwrap(), 0.0);
    assert_eq!(pwcca(a, b).unwrap(), 0.0);
    assert_eq!(svcca(a, b, 2).unwrap(), 0.0);
    assert!(linear_cka(a, b).unwrap().is_nan());
}

#[test]
fn bad_input_is_a_typed_error() {
    use SimilarityError as E;
    let x = vec![0.5f32; 40];
    assert!(matches!(
        Activations::new(&x, 3),
        Err(E::Shape {
            len: 40,
            width: 3,
            ..
        })
    ));
    assert!(matches!(
        Activations::new(&x, 0),
        Err(E::Shape { width: 0, .. })
    ));
    let a = Activations::new(&x, 4).unwrap(); // 10 x 4
    let b = Activations::new(&x[..36], 4).unwrap(); // 9 x 4
    assert!(matches!(
        cca(a, b),
        Err(E::Rows {
            rows: 10,
            other_rows: 9,
            ..
        })
    ));
    let wide = Activations::new(&x, 10).unwrap(); // 4 x 10
    let e = pwcca(wide, wide).unwrap_err();
    assert!(
        matches!(
            e,
            E::TooFewDatapoints {
                metric: "pwcca",
                needed_over: 10,
                got: 4,
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(
        svcca(a, a, 5),
        Err(E::SvccaDims {
            dims: 5,
            width: 4,
            ..
        })
    ));
    assert!(matches!(svcca(a, a, 0), Err(E::SvccaDims { dims: 0, .. })));
    let tiny = Activations::new(&x[..12], 4).unwrap(); // 3 x 4
    assert!(matches!(
        linear_cka_unbiased(tiny, tiny),
        Err(E::TooFewDatapoints { got: 3, .. })
    ));
    let mut nan = x.clone();
    nan[13] = f32::NAN;
    let e = linear_cka(a, Activations::new(&nan, 4).unwrap()).unwrap_err();
    assert!(matches!(e, E::NotFinite { row: 3, col: 1, .. }), "{e}");
    assert_eq!(e.to_string(), "b: datapoint 3, neuron 1 is NaN");

    // The accumulator.
    assert!(matches!(
        CovarianceAccumulator::new(&[4, 4], &[3], &[(0, 1)]),
        Err(E::LayerOutOfRange {
            side: 'b',
            layers: 1,
            ..
        })
    ));
    assert!(matches!(
        CovarianceAccumulator::new(&[4, 0], &[3], &[(0, 0)]),
        Err(E::EmptySide { side: 'a', .. })
    ));
    let mut acc = CovarianceAccumulator::new(&[4, 4], &[3], &[(1, 0)]).unwrap();
    let (ya, yb, none): (&[f32], &[f32], &[f32]) = (&[1.0; 20], &[1.0; 15], &[]);
    assert!(matches!(
        acc.push(&[ya], &[yb]),
        Err(E::LayerCount {
            side: 'a',
            got: 1,
            ..
        })
    ));
    assert!(matches!(
        acc.push(&[none, &ya[..18]], &[yb]),
        Err(E::Shape { .. })
    ));
    assert!(matches!(
        acc.push(&[none, &ya[..16]], &[yb]),
        Err(E::Rows {
            rows: 5,
            other_rows: 4,
            ..
        })
    ));
    let mut bad = yb.to_vec();
    bad[14] = f32::INFINITY;
    let e = acc.push(&[none, ya], &[&bad]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "side b layer 0: datapoint 4, neuron 2 is inf"
    );
    assert_eq!(acc.positions(), 0, "nothing added by failed pushes");
    // Layer 0 of side a is named by no pair: its slice is not read.
    acc.push(&[none, ya], &[yb]).unwrap();
    assert_eq!(acc.positions(), 5);
    let e = acc.finish(&MomentOptions::default()).unwrap_err();
    assert!(
        matches!(
            e,
            E::SvccaDims {
                dims: 20,
                width: 4,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "svcca: dims 20 must be in 1..=4 (side a layer 1's width)"
    );
    let only = |metrics| MomentOptions {
        metrics,
        ..MomentOptions::default()
    };
    // 5 positions are enough for CCA on 4 and 3 neurons; 4 are not (n must exceed both widths).
    let mut four = CovarianceAccumulator::new(&[4, 4], &[3], &[(1, 0)]).unwrap();
    four.push(&[none, &ya[..16]], &[&yb[..12]]).unwrap();
    let e = four.finish(&only(vec![Metric::Pwcca])).unwrap_err();
    assert!(
        matches!(
            e,
            E::TooFewDatapoints {
                metric: "pwcca",
                needed_over: 4,
                got: 4,
                ..
            }
        ),
        "{e}"
    );
    assert!(acc.finish(&only(vec![Metric::Cca])).is_ok());
    assert!(matches!(
        acc.finish(&only(vec![Metric::CkaMinibatch])),
        Err(E::UnsupportedMetric {
            metric: Metric::CkaMinibatch,
            ..
        })
    ));
    assert!(
        acc.finish(&only(vec![Metric::Cka])).unwrap()[0]
            .value
            .is_nan(),
        "constant data"
    );

    // The minibatch accumulator.
    assert!(matches!(
        MinibatchCka::new(&[4], &[3], 3),
        Err(E::BatchSize { batch: 3 })
    ));
    assert!(matches!(
        MinibatchCka::new(&[], &[3], 8),
        Err(E::EmptySide { side: 'a', .. })
    ));
    let mut mb = MinibatchCka::new(&[4], &[3], 8).unwrap();
    mb.push(&[ya], &[yb]).unwrap();
    assert!(matches!(
        mb.finish(),
        Err(E::TooFewDatapoints { got: 5, .. })
    ));
    assert!(matches!(mb.push(&[ya], &[&yb[..12]]), Err(E::Rows { .. })));
}

#[test]
fn memory_estimates_and_pass_plans() {
    let (wa, wb) = (vec![576; 31], vec![576; 31]);
    let all: Vec<(usize, usize)> = (0..31).flat_map(|a| (0..31).map(move |b| (a, b))).collect();
    let est = CovarianceAccumulator::memory_estimate(&wa, &wb, &all, 20).unwrap();
    // 961 cross terms + 62 scatters of 576² f64.
    assert_eq!(
        est.accumulators,
        (961 * 576 * 576 + 62 * (576 * 576 + 2 * 576)) * 8
    );
    assert_eq!(est.push_per_row, 62 * 576 * 8);
    let budget = 1 << 30;
    let passes = plan_passes(&wa, &wb, &all, 20, 1024, budget).unwrap();
    assert!(passes.len() > 1);
    assert_eq!(passes.iter().map(Vec::len).sum::<usize>(), all.len());
    for p in &passes {
        let e = CovarianceAccumulator::memory_estimate(&wa, &wb, p, 20).unwrap();
        assert!(e.peak(1024) <= budget);
    }
    assert!(matches!(
        plan_passes(&wa, &wb, &all, 20, 1024, 1 << 20),
        Err(SimilarityError::OverBudget {
            layer_a: 0,
            layer_b: 0,
            ..
        })
    ));
    assert!(MinibatchCka::memory_estimate(&wa, &wb, 256) > 62 * 256 * 256 * 8);
    assert_eq!(
        Metric::ALL.map(Metric::as_str),
        ["cka", "cka_minibatch", "svcca", "pwcca", "cca"]
    );
}

#[test]
fn gram_upper_mirrored_equals_the_full_product() {
    // Widths below, at and across the block size, not multiples of it; two pushes accumulate.
    let mut rng = SplitMix64::new(7);
    for (rows, d) in [(5, 3), (17, 256), (9, 300), (33, 513)] {
        let mut scatter = vec![0.0; d * d];
        let mut want = vec![0.0; d * d];
        for _ in 0..2 {
            let y: Vec<f64> = (0..rows * d).map(|_| rng.next_f64() - 0.5).collect();
            accumulator::add_gram_upper(&mut scatter, &y, rows, d);
            for r in y.chunks_exact(d) {
                for i in 0..d {
                    for j in 0..d {
                        want[i * d + j] += r[i] * r[j];
                    }
                }
            }
        }
        accumulator::mirror_upper(&mut scatter, d);
        for i in 0..d {
            for j in 0..d {
                let (g, w) = (scatter[i * d + j], want[i * d + j]);
                assert!(
                    (g - w).abs() <= 1e-12 * (1.0 + w.abs()),
                    "{rows}x{d} at {i},{j}: {g} vs {w}"
                );
                assert_eq!(
                    g,
                    scatter[j * d + i],
                    "{rows}x{d}: not symmetric at {i},{j}"
                );
            }
        }
    }
}
