//! The bf16 compute precision (`--compute bf16`, `model.compute`): every weight product of the
//! fast forward and of the reverse pass rounds both operands to bf16 and sums in f32
//! (`numerics::amx`; its kernel is checked exactly against bf16-rounded operands in its unit
//! tests). Here, on whole models: the results move away from f32 by bf16's rounding and no more,
//! the reverse pass computes in the same precision as the forward (its target values agree with
//! the forward's logits to f32 rounding), and the option is parsed, recorded and refused
//! clearly.

use candle_core::{IndexOp, Tensor};
use tokenlens::model::{Capture, Compute, Logits, Model};

use crate::common::{Tokenlens, data_dir, manifest, scratch, single_target_segments, tiny_spec};

const BIN: Tokenlens = Tokenlens::RUN;

/// max |a - b| / max(max |b|, 1).
fn scaled_diff(a: &[f32], b: &[f32]) -> f32 {
    let m = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
    a.iter().zip(b).fold(0f32, |d, (x, y)| d.max((x - y).abs())) / m
}

fn softmax_at(logits: &Tensor, row: usize, pos: usize, token: u32) -> f32 {
    let l: Vec<f32> = logits.i((row, pos)).unwrap().to_vec1().unwrap();
    let max = l.iter().fold(f32::MIN, |m, v| m.max(*v));
    let sum: f64 = l.iter().map(|v| ((v - max) as f64).exp()).sum();
    (((l[token as usize] - max) as f64).exp() / sum) as f32
}

#[test]
fn bf16_compute_rounds_forward_and_reverse_pass_alike() {
    for name in ["tiny-llama", "tiny-gpt2", "tiny-gemma3", "tiny-phi3"] {
        let exact = Model::load(&data_dir().join(name), None).unwrap();
        let mut fast = Model::load(&data_dir().join(name), None).unwrap();
        fast.set_compute(Compute::Bf16);
        assert_eq!(fast.compute, Compute::Bf16);
        let ids: Vec<Vec<u32>> = ["The capital of France is", "Once upon a time there was a"]
            .iter()
            .map(|p| exact.encode(p).unwrap())
            .collect();
        let batch = exact.batch(&ids).unwrap();
        let cap = Capture {
            logits: Logits::All,
            ..Capture::default()
        };
        let le = exact.forward(&batch, &cap).unwrap().logits.unwrap();
        let lf = fast.forward(&batch, &cap).unwrap().logits.unwrap();
        let (ve, vf): (Vec<f32>, Vec<f32>) = (
            le.flatten_all().unwrap().to_vec1().unwrap(),
            lf.flatten_all().unwrap().to_vec1().unwrap(),
        );
        let d = scaled_diff(&vf, &ve);
        // bf16 keeps 8 bits of mantissa (relative rounding 2^-9 = 2e-3 per operand), and the
        // errors compound over the layers: measured 2026-12-01 on these random tiny models,
        // logits 0.8-3.0e-2 of their largest, gradients 0.9-7.0e-2 of theirs (SmolLM2: target
        // probabilities within 2e-3 median, 1.8e-2 worst; docs/model.md, "Precision").
        assert!(
            d > 1e-5,
            "{name}: bf16 compute changed nothing ({d:e}): not taken?"
        );
        assert!(d < 5e-2, "{name}: bf16 logits {d:e} away from f32");

        // The reverse pass: its targets' values are the bf16 forward's probabilities (its own
        // forward runs the same bf16 products), its gradients near the f32 ones.
        let last = batch.width() - 1;
        let pairs: Vec<(usize, u32)> = ids
            .iter()
            .enumerate()
            .map(|(r, row)| {
                let tok = le
                    .i((r, last))
                    .unwrap()
                    .argmax(0)
                    .unwrap()
                    .to_scalar::<u32>()
                    .unwrap();
                (row.len() - 1, tok)
            })
            .collect();
        let re = exact
            .metric_gradients(&single_target_segments(&exact, &ids, &pairs))
            .unwrap();
        let rf = fast
            .metric_gradients(&single_target_segments(&fast, &ids, &pairs))
            .unwrap();
        for (r, ((e, f), &(_, tok))) in re.iter().zip(&rf).zip(&pairs).enumerate() {
            // Rows are left-padded: each one's last token is at the last column.
            let (pf, pe) = (softmax_at(&lf, r, last, tok), softmax_at(&le, r, last, tok));
            assert!(
                (f.values[0] - pf).abs() <= 1e-5 * pf.max(1e-3),
                "{name} row {r}: reverse-pass value {} vs bf16 forward {pf}",
                f.values[0]
            );
            assert!(
                (e.values[0] - pe).abs() <= 1e-5 * pe.max(1e-3),
                "{name} row {r}: f32 reverse-pass value {} vs forward {pe}",
                e.values[0]
            );
            let (ge, gf) = (e.grads[0].as_ref().unwrap(), f.grads[0].as_ref().unwrap());
            let g = scaled_diff(gf, ge) * ge.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0)
                / ge.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(g > 0.0, "{name} row {r}: bf16 gradients identical to f32");
            assert!(
                g < 1e-1,
                "{name} row {r}: bf16 gradients {g:e} (of their max) from f32"
            );
        }
    }
}

#[test]
fn bad_compute_values_fail_with_the_field_named() {
    let m = data_dir().join("tiny-llama");
    let m = m.to_str().unwrap();
    let o = BIN.output(&["predict", "--model", m, "--compute", "fp8", "x"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("invalid value 'fp8' for '--compute <COMPUTE>': unknown compute precision `fp8` (expected one of: f32, bf16)"),
        "{err}"
    );
    let dir = scratch("compute-bad-yaml");
    let spec = dir.join("spec.yaml");
    std::fs::write(dir.join("data.jsonl"), "{\"text\": \"hi\"}\n").unwrap();
    std::fs::write(
        &spec,
        format!("model:\n  path: {m}\n  compute: f16\ndataset:\n  path: data.jsonl\noutput:\n  dir: out\n"),
    )
    .unwrap();
    BIN.fails_mentioning(
        &["validate", "--no-model", spec.to_str().unwrap()],
        &["spec.yaml", "compute", "f16", "f32", "bf16"],
    );
}

/// `model: {compute: bf16}` runs a pipeline and the manifest records the precision and whether
/// the CPU ran it on AMX.
#[test]
fn a_pipeline_runs_with_bf16_compute() {
    let spec = |name: &str, compute: &str| {
        tiny_spec(
            name,
            "{\"text\": \"The capital of France is\"}\n",
            &format!(
                "model:\n  path: MODEL\n{compute}dataset:\n  path: data.jsonl\ngeneration:\n  max_new_tokens: 2\nanalyses:\n  predictions: {{top_k: 3}}\n  saliency: {{methods: [grad_x_input], n_steps: 4}}\noutput:\n  dir: out\n"
            ),
        )
    };
    let bf16 = spec("compute-pipeline", "  compute: bf16\n");
    BIN.ok(&["run", "--quiet", bf16.to_str().unwrap()]);
    let out = bf16.with_file_name("out");
    let m = manifest(&out);
    assert_eq!(m["model"]["compute"], "bf16");
    assert_eq!(m["model"]["amx"], tokenlens::numerics::amx::available());
    assert_eq!(m["spec"]["model"]["compute"], "bf16");
    assert!(out.join("saliency").exists());

    // In f32 (the default) no product runs on the tile unit, whatever the CPU has.
    let f32 = spec("compute-pipeline-f32", "");
    BIN.ok(&["run", "--quiet", f32.to_str().unwrap()]);
    let m = manifest(&f32.with_file_name("out"));
    assert_eq!(m["model"]["compute"], "f32");
    assert_eq!(m["model"]["amx"], false);
}
