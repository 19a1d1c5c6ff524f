//! A block as the reverse pass reads it: the model's own description (`model::block::Block`)
//! with its weights borrowed as raw slices for one pass (`BlockW`, `Lin`, `Norm`; matrices in
//! their storage dtype, `WSlice`), linear layers' products included.

use candle_core::{Storage, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::model::Model;
use crate::model::block::{self, Block, NormKind};
use crate::model::ops::Linear;
use crate::numerics::amx::{self, Packs};
use crate::numerics::wmat::{WSlice, gemm_w_strided};

/// One block's weights, borrowed for a pass, beside its description `b`.
pub(super) struct BlockW<'a> {
    pub(super) b: &'a Block,
    pub(super) attn_in: Option<Norm<'a>>,
    pub(super) attn_out: Option<Norm<'a>>,
    pub(super) attn_res: Option<Norm<'a>>,
    pub(super) q_norm: Option<Norm<'a>>,
    pub(super) k_norm: Option<Norm<'a>>,
    pub(super) mlp_in: Option<Norm<'a>>,
    pub(super) mlp_out: Option<Norm<'a>>,
    pub(super) mlp_res: Option<Norm<'a>>,
    pub(super) qkv: Lin<'a>,
    pub(super) o: Lin<'a>,
    pub(super) up: Lin<'a>,
    pub(super) down: Lin<'a>,
}

impl<'a> BlockW<'a> {
    pub(super) fn of(model: &'a Model, l: usize) -> Result<Self> {
        let b = &model.body.blocks[l];
        let n = |x: &'a Option<block::Norm>| x.as_ref().map(Norm::of).transpose();
        Ok(BlockW {
            attn_in: n(&b.attn_in)?,
            attn_out: n(&b.attn_out)?,
            attn_res: n(&b.attn_res)?,
            q_norm: n(&b.attn.q_norm)?,
            k_norm: n(&b.attn.k_norm)?,
            mlp_in: n(&b.mlp_in)?,
            mlp_out: n(&b.mlp_out)?,
            mlp_res: n(&b.mlp_res)?,
            qkv: Lin::of(&b.attn.qkv)?,
            o: Lin::of(&b.attn.o)?,
            up: Lin::of(&b.mlp.up)?,
            down: Lin::of(&b.mlp.down)?,
            b,
        })
    }
}

/// A normalization layer, borrowed.
pub(super) enum Norm<'a> {
    Rms(Data<'a>, f32),
    Layer(Data<'a>, Data<'a>, f32),
}

impl<'a> Norm<'a> {
    pub(super) fn of(n: &'a block::Norm) -> Result<Self> {
        let eps = n.eps as f32;
        Ok(match (n.kind, &n.b) {
            (NormKind::Rms, _) => Norm::Rms(Data::of(&n.w)?, eps),
            (NormKind::Layer, Some(b)) => Norm::Layer(Data::of(&n.w)?, Data::of(b)?, eps),
            (NormKind::Layer, None) => {
                return Err(Error::Input("LayerNorm without a bias".into()));
            }
        })
    }

    /// Values per normalized group.
    pub(super) fn width(&self) -> usize {
        match self {
            Norm::Rms(w, _) | Norm::Layer(w, _, _) => w.s().len(),
        }
    }

    /// y = norm(x) over each group of `width` values of x.
    pub(super) fn forward_groups(&self, x: &[f32], y: &mut [f32]) {
        let n = self.width();
        for (y, x) in y.chunks_mut(n).zip(x.chunks(n)) {
            self.forward_row(x, y);
        }
    }

    /// dx += J^T dy over each group of `width` values.
    pub(super) fn backward_groups(&self, x: &[f32], dy: &[f32], dx: &mut [f32]) {
        let n = self.width();
        for ((dx, dy), x) in dx.chunks_mut(n).zip(dy.chunks(n)).zip(x.chunks(n)) {
            self.backward_row(x, dy, dx);
        }
    }
}

/// A linear layer's weight [in, out] and bias, borrowed.
pub(super) struct Lin<'a> {
    w: Data<'a>,
    b: Option<Data<'a>>,
    inp: usize,
    out: usize,
    /// The weight's packed bf16 copies when products run in bf16.
    bf16: Option<&'a Packs>,
}

impl<'a> Lin<'a> {
    pub(super) fn of(l: &'a Linear) -> Result<Self> {
        let (wt, b) = l.parts();
        let (inp, out) = wt.dims2()?;
        let b = b.map(Data::of).transpose()?;
        Ok(Lin {
            w: Data::of(wt)?,
            b,
            inp,
            out,
            bf16: l.bf16_packs(),
        })
    }

    /// y [m, out] = x [m, in] W + b.
    pub(super) fn forward(&self, x: &[f32], y: &mut [f32]) {
        let m = x.len() / self.inp;
        if let Some(p) = self.bf16 {
            let packed = p.forward(self.out, self.inp, self.w.w(), self.out, 1);
            if let Some(b) = &self.b {
                y.par_chunks_mut(self.out)
                    .for_each(|r| r.copy_from_slice(b.s()));
            }
            let acc = self.b.is_some();
            amx::gemm_packed(
                m,
                y,
                self.out,
                acc,
                x,
                self.inp,
                1,
                packed,
                amx::threads_here(),
            );
            return;
        }
        match &self.b {
            Some(b) => {
                y.par_chunks_mut(self.out)
                    .for_each(|r| r.copy_from_slice(b.s()));
                gemm(m, self.out, self.inp, y, true, x, self.w.w(), self.out, 1);
            }
            None => gemm(m, self.out, self.inp, y, false, x, self.w.w(), self.out, 1),
        }
    }

    /// dx [m, in] = dy [m, out] W^T: W read as stored, [in, out], i.e. transposed; `gemm_w`
    /// copies (or widens) it into [out, in] panels when there are enough rows for that to pay.
    pub(super) fn backward(&self, dy: &[f32], dx: &mut [f32]) {
        let m = dy.len() / self.out;
        if let Some(p) = self.bf16 {
            // W^T [out, in]: element (kk, j) = W[j, kk] at j * out + kk.
            let packed = p.transposed(self.inp, self.out, self.w.w(), 1, self.out);
            amx::gemm_packed(
                m,
                dx,
                self.inp,
                false,
                dy,
                self.out,
                1,
                packed,
                amx::threads_here(),
            );
            return;
        }
        gemm(
            m,
            self.inp,
            self.out,
            dx,
            false,
            dy,
            self.w.w(),
            1,
            self.out,
        )
    }
}

/// dst [m, n] (+)= lhs [m, k] (row-major, contiguous) . rhs, with rhs[kk, nn] at
/// `rhs[kk * rs + nn * cs]`. Multi-threaded unless already inside a rayon task.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    acc: bool,
    lhs: &[f32],
    rhs: WSlice,
    rs: usize,
    cs: usize,
) {
    gemm_w_strided(m, n, k, dst, acc, lhs, k, 1, rhs, rs, cs)
}

/// The data of a contiguous CPU tensor, borrowed for as long as the guard lives: f32 (`s`), or a
/// weight matrix in any storage dtype (`w`).
pub(super) struct Data<'a> {
    guard: Box<dyn std::ops::Deref<Target = Storage> + Sync + 'a>,
    range: (usize, usize),
}

impl Data<'_> {
    pub(super) fn of(t: &Tensor) -> Result<Data<'_>> {
        let (guard, layout) = t.storage_and_layout();
        let range = layout
            .contiguous_offsets()
            .ok_or_else(|| Error::Input("reverse pass: weight is not contiguous".into()))?;
        match &*guard {
            Storage::Cpu(
                candle_core::CpuStorage::F32(_)
                | candle_core::CpuStorage::BF16(_)
                | candle_core::CpuStorage::F16(_),
            ) => {}
            Storage::Cpu(_) => {
                return Err(Error::Input(
                    "reverse pass: tensors must be f32, bf16 or f16".into(),
                ));
            }
            _ => return Err(Error::Input("the reverse pass runs on the CPU only".into())),
        }
        Ok(Data {
            guard: Box::new(guard),
            range,
        })
    }

    /// The values, which must be f32 (norms, biases, tables: always loaded as f32).
    pub(super) fn s(&self) -> &[f32] {
        match self.w() {
            WSlice::F32(s) => s,
            other => panic!("reverse pass: an f32 tensor expected, got {other:?}"),
        }
    }

    /// The values of a weight matrix, in its storage dtype.
    pub(super) fn w(&self) -> WSlice<'_> {
        let Storage::Cpu(c) = &**self.guard else {
            unreachable!("checked in Data::of")
        };
        let (a, b) = self.range;
        match c {
            candle_core::CpuStorage::F32(v) => WSlice::F32(&v[a..b]),
            candle_core::CpuStorage::BF16(v) => WSlice::Bf16(&v[a..b]),
            candle_core::CpuStorage::F16(v) => WSlice::F16(&v[a..b]),
            _ => unreachable!("checked in Data::of"),
        }
    }
}
