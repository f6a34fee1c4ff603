//! Causal self-attention as every family has it, the variants being options: biases, per-head
//! q/k norms (Gemma 3), rotary or no positions (OPT adds learned ones to the embedding), the
//! score scale, a sliding window, and grouped-query heads.

use super::attention_rows::{self, RowsShape};
use super::linear::{matmul, stack_linear, Linear};
use super::norm::Norm;
use crate::engine::kv_cache::LayerKv;
use crate::engine::rope::Rope;
use anyhow::Result;
use candle_core::{DType, Tensor};
use std::sync::Arc;

/// Head counts and width of one attention.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heads {
    pub(crate) num_heads: usize,
    pub(crate) num_kv_heads: usize,
    pub(crate) head_dim: usize,
}

pub(crate) struct Attention {
    /// q, k and v projections stacked into one matrix: one matmul per token instead of three
    /// (small decode steps are dominated by per-op overhead).
    qkv_proj: Linear,
    /// The k/v rows of `qkv_proj` (a view, no copy), for filling K/V without computing q.
    kv_proj: Linear,
    o_proj: Linear,
    /// RMSNorm over each head's q and k, before the rotation (Gemma 3).
    qk_norms: Option<(Norm, Norm)>,
    rope: Option<Arc<Rope>>,
    heads: Heads,
    scale: f64,
    window: Option<usize>,
}

impl Attention {
    /// `q`, `k`, `v` and `o` as loaded, fused here; `scale` multiplies q·k.
    pub(crate) fn new(
        [q, k, v, o]: [Linear; 4],
        heads: Heads,
        rope: Option<Arc<Rope>>,
        scale: f64,
        window: Option<usize>,
    ) -> Result<Self> {
        let q_width = heads.num_heads * heads.head_dim;
        let kv_width = heads.num_kv_heads * heads.head_dim;
        let qkv_proj = stack_linear(&[q, k, v])?;
        let kv_proj = qkv_proj.narrow_rows(q_width, 2 * kv_width)?;
        Ok(Self {
            qkv_proj,
            kv_proj,
            o_proj: o,
            qk_norms: None,
            rope,
            heads,
            scale,
            window,
        })
    }

    pub(crate) fn with_qk_norms(mut self, q_norm: Norm, k_norm: Norm) -> Self {
        self.qk_norms = Some((q_norm, k_norm));
        self
    }

    /// The positions this attention looks back over (`None`: all of them).
    pub(crate) fn window(&self) -> Option<usize> {
        self.window
    }

    /// `[b, s, heads * head_dim]` → `[b, heads, s, head_dim]`, normed by `norm`, and rotated
    /// for first position `rotate_at` where given (q and k are; v is not).
    fn heads_of(
        &self,
        x: &Tensor,
        heads: usize,
        norm: Option<&Norm>,
        rotate_at: Option<usize>,
    ) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let mut x = x
            .contiguous()?
            .reshape((b, s, heads, self.heads.head_dim))?;
        if let Some(norm) = norm {
            x = norm.forward(&x)?;
        }
        if let (Some(rope), Some(offset)) = (&self.rope, rotate_at) {
            x = rope.apply(&x, offset)?;
        }
        Ok(x.transpose(1, 2)?.contiguous()?)
    }

    /// Keys and values from stacked `[.., k | v]` projections, laid out
    /// `[1, kv_heads, seq, head_dim]`.
    fn split_kv(&self, kv: &Tensor, offset: usize) -> Result<(Tensor, Tensor)> {
        let (heads, width) = (
            self.heads.num_kv_heads,
            self.heads.num_kv_heads * self.heads.head_dim,
        );
        let k_norm = self.qk_norms.as_ref().map(|(_, k)| k);
        let k = self.heads_of(&kv.narrow(2, 0, width)?, heads, k_norm, Some(offset))?;
        let v = self.heads_of(&kv.narrow(2, width, width)?, heads, None, None)?;
        Ok((k, v))
    }

    /// Keys and values for the attention input `x` (`[1, seq, hidden]`), laid out
    /// `[1, kv_heads, seq, head_dim]`. Also what KV-fill strategies call to give skipped
    /// layers their entries.
    pub(crate) fn keys_values(&self, x: &Tensor, offset: usize) -> Result<(Tensor, Tensor)> {
        self.split_kv(&self.kv_proj.forward(x)?, offset)
    }

    /// Attention over `x` (`[1, seq, hidden]`, first position `offset`) and what `kv` holds,
    /// which the new keys and values join. `mask` is the additive mask for this window.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        offset: usize,
        mask: Option<&Tensor>,
        kv: &mut LayerKv,
    ) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let Heads {
            num_heads,
            num_kv_heads,
            head_dim,
        } = self.heads;
        let q_width = num_heads * head_dim;
        let qkv = self.qkv_proj.forward(x)?;
        let q_norm = self.qk_norms.as_ref().map(|(q, _)| q);
        let q = self.heads_of(&qkv.narrow(2, 0, q_width)?, num_heads, q_norm, Some(offset))?;
        let kv_width = qkv.dim(2)? - q_width;
        let (k, v) = self.split_kv(&qkv.narrow(2, q_width, kv_width)?, offset)?;
        let (k, v) = kv.append(&k, &v)?;
        let rows_shape = RowsShape {
            num_heads,
            num_kv_heads,
            head_dim,
            offset,
            window: self.window,
            scale: self.scale as f32,
        };
        if let Some(out) = attention_rows::attend(&q, &k, &v, rows_shape)? {
            return Ok(self.o_proj.forward(&out)?);
        }
        let total = k.dim(2)?;

        // Grouped-query attention without copying K/V: the query heads that share a KV head
        // are folded into the row dimension, so one batched matmul per KV head does the work.
        let group = num_heads / num_kv_heads;
        let q = q.reshape((b, num_kv_heads, group * s, head_dim))?;
        let scores = (matmul(&q, &k.t()?)? * self.scale)?.to_dtype(DType::F32)?;
        let scores = match mask {
            Some(mask) => scores
                .reshape((b, num_kv_heads, group, s, total))?
                .broadcast_add(mask)?
                .reshape((b, num_kv_heads, group * s, total))?,
            None => scores,
        };
        let weights = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
        let out = matmul(&weights, &v)?
            .reshape((b, num_heads, s, head_dim))?
            .transpose(1, 2)?
            .reshape((b, s, num_heads * head_dim))?;
        Ok(self.o_proj.forward(&out)?)
    }
}
