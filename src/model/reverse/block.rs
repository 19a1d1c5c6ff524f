//! A decoder block as the reverse pass reads it: the description the architectures hand over
//! (`BlockRef`, with `NormRef` and `ActKind`), and the same with its weights borrowed as raw
//! f32 slices for one pass (`BlockW`, `Lin`, `Norm`), linear layers' products included.

use candle_core::{Storage, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::model::Model;
use crate::model::ops::Linear;
use crate::numerics::matrix::gemm_strided;

/// A normalization layer as the reverse pass reads it.
#[derive(Clone, Copy)]
pub enum NormRef<'a> {
    /// x / sqrt(mean(x^2) + eps) * w
    Rms { w: &'a Tensor, eps: f32 },
    /// (x - mean) / sqrt(var + eps) * w + b
    Layer {
        w: &'a Tensor,
        b: &'a Tensor,
        eps: f32,
    },
}

/// The MLP nonlinearity between the up and down projections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActKind {
    /// silu(gate) * up on a stacked [gate | up] projection.
    SwiGlu,
    /// GELU, tanh approximation.
    GeluTanh,
    /// GELU, exact (erf).
    GeluErf,
}

impl ActKind {
    /// Width of the projection feeding the nonlinearity, for `ffn` activations.
    pub(super) fn pre_width(self, ffn: usize) -> usize {
        match self {
            ActKind::SwiGlu => 2 * ffn,
            _ => ffn,
        }
    }
}

/// One pre-norm decoder block: x + o(attn(qkv(norm1(x)))), then + down(act(up(norm2(x)))).
pub struct BlockRef<'a> {
    pub norm1: NormRef<'a>,
    /// Stacked q | k | v projection.
    pub qkv: &'a Linear,
    pub o: &'a Linear,
    pub norm2: NormRef<'a>,
    pub up: &'a Linear,
    pub act: ActKind,
    pub down: &'a Linear,
}

/// One block's weights, borrowed for a pass.
pub(super) struct BlockW<'a> {
    pub(super) b: BlockRef<'a>,
    pub(super) norm1: Norm<'a>,
    pub(super) norm2: Norm<'a>,
    pub(super) qkv: Lin<'a>,
    pub(super) o: Lin<'a>,
    pub(super) up: Lin<'a>,
    pub(super) down: Lin<'a>,
}

impl<'a> BlockW<'a> {
    pub(super) fn of(model: &'a Model, l: usize) -> Result<Self> {
        let b = model.body.block(l);
        Ok(BlockW {
            norm1: Norm::of(b.norm1)?,
            norm2: Norm::of(b.norm2)?,
            qkv: Lin::of(b.qkv)?,
            o: Lin::of(b.o)?,
            up: Lin::of(b.up)?,
            down: Lin::of(b.down)?,
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
    pub(super) fn of(n: NormRef<'a>) -> Result<Self> {
        Ok(match n {
            NormRef::Rms { w, eps } => Norm::Rms(Data::of(w)?, eps),
            NormRef::Layer { w, b, eps } => Norm::Layer(Data::of(w)?, Data::of(b)?, eps),
        })
    }
}

/// A linear layer's weight [in, out] and bias, borrowed.
pub(super) struct Lin<'a> {
    w: Data<'a>,
    /// The weight as [out, in], for widening layers (see `Linear::weight_out_in`).
    w_out_in: Option<Data<'a>>,
    b: Option<Data<'a>>,
    inp: usize,
    out: usize,
}

impl<'a> Lin<'a> {
    pub(super) fn of(l: &'a Linear) -> Result<Self> {
        let (wt, b) = l.parts();
        let (inp, out) = wt.dims2()?;
        let b = b.map(Data::of).transpose()?;
        let w_out_in = if out > inp {
            Some(Data::of(l.weight_out_in()?)?)
        } else {
            None
        };
        Ok(Lin {
            w: Data::of(wt)?,
            w_out_in,
            b,
            inp,
            out,
        })
    }

    /// y [m, out] = x [m, in] W + b.
    pub(super) fn forward(&self, x: &[f32], y: &mut [f32]) {
        let m = x.len() / self.inp;
        match &self.b {
            Some(b) => {
                y.par_chunks_mut(self.out)
                    .for_each(|r| r.copy_from_slice(b.s()));
                gemm(m, self.out, self.inp, y, true, x, self.w.s(), self.out, 1);
            }
            None => gemm(m, self.out, self.inp, y, false, x, self.w.s(), self.out, 1),
        }
    }

    /// dx [m, in] = dy [m, out] W^T.
    pub(super) fn backward(&self, dy: &[f32], dx: &mut [f32]) {
        let m = dy.len() / self.out;
        match &self.w_out_in {
            Some(w) => gemm(m, self.inp, self.out, dx, false, dy, w.s(), self.inp, 1),
            None => gemm(
                m,
                self.inp,
                self.out,
                dx,
                false,
                dy,
                self.w.s(),
                1,
                self.out,
            ),
        }
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
    rhs: &[f32],
    rs: usize,
    cs: usize,
) {
    gemm_strided(m, n, k, dst, acc, lhs, k, 1, rhs, rs, cs)
}

/// The f32 data of a contiguous CPU tensor, borrowed for as long as the guard lives.
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
        if !matches!(&*guard, Storage::Cpu(_)) {
            return Err(Error::Input("the reverse pass runs on the CPU only".into()));
        }
        Ok(Data {
            guard: Box::new(guard),
            range,
        })
    }

    pub(super) fn s(&self) -> &[f32] {
        match &**self.guard {
            Storage::Cpu(c) => match c.as_slice::<f32>() {
                Ok(s) => &s[self.range.0..self.range.1],
                Err(_) => &[],
            },
            _ => &[],
        }
    }
}
