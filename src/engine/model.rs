//! The decoder shared by Llama, Mistral and Qwen2, read top to bottom:
//! embed → N × (attention + MLP, pre-norm residual) → final norm → lm_head.
//!
//! [`DecoderModel::forward`] is where the [`LayerHook`] door sits: after every block it may hand
//! the hidden states to a hook and stop the pass there.

use super::config::ModelConfig;
use super::kv_cache::{KvCache, LayerKv};
use super::rope::Rope;

mod batch;
mod linear;
use super::weights::{Matrix, SafetensorsWeights, WeightSource};
use crate::hook::{Decision, LayerHook, LayerView, PassInfo, SkipPlan};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use linear::{linear, matmul, matrix_matmul_t, stack_linear, Linear};

/// Every id in `ids` must index the vocabulary; `what` names them in the error.
pub fn check_vocabulary(what: &str, ids: &[u32], vocab: usize) -> Result<()> {
    match ids.iter().find(|&&id| id as usize >= vocab) {
        Some(bad) => bail!("{what} id {bad} is outside the vocabulary (size {vocab})"),
        None => Ok(()),
    }
}

fn norm_weight(weights: &dyn WeightSource, prefix: &str, name: &str, dim: usize) -> Result<Tensor> {
    weights.tensor(&format!("{prefix}.{name}.weight"), &[dim])
}

struct Attention {
    /// q, k and v projections stacked into one matrix: one matmul per token instead of three
    /// (small decode steps are dominated by per-op overhead).
    qkv_proj: Linear,
    /// The k/v rows of `qkv_proj` (a view, no copy), for filling K/V without computing q.
    kv_proj: Linear,
    o_proj: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(weights: &dyn WeightSource, prefix: &str, c: &ModelConfig) -> Result<Self> {
        let (h, q, kv) = (
            c.hidden_size,
            c.num_attention_heads * c.head_dim,
            c.num_key_value_heads * c.head_dim,
        );
        let parts = [
            linear(weights, prefix, "q_proj", h, q, c.qkv_bias)?,
            linear(weights, prefix, "k_proj", h, kv, c.qkv_bias)?,
            linear(weights, prefix, "v_proj", h, kv, c.qkv_bias)?,
        ];
        let qkv_proj = stack_linear(&parts)?;
        let kv_proj = qkv_proj.narrow_rows(q, 2 * kv)?;
        Ok(Self {
            qkv_proj,
            kv_proj,
            o_proj: linear(weights, prefix, "o_proj", q, h, false)?,
            num_heads: c.num_attention_heads,
            num_kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
        })
    }

    /// Rotated keys and values from stacked `[.., k | v]` projections, laid out
    /// `[1, kv_heads, seq, head_dim]`.
    fn split_kv(&self, kv: &Tensor, rope: &Rope, offset: usize) -> Result<(Tensor, Tensor)> {
        let (b, s, _) = kv.dims3()?;
        let width = self.num_kv_heads * self.head_dim;
        let shape = (b, s, self.num_kv_heads, self.head_dim);
        let k = kv.narrow(2, 0, width)?.contiguous()?.reshape(shape)?;
        let v = kv.narrow(2, width, width)?.contiguous()?.reshape(shape)?;
        let k = rope.apply(&k, offset)?.transpose(1, 2)?.contiguous()?;
        let v = v.transpose(1, 2)?.contiguous()?;
        Ok((k, v))
    }

    /// Rotated keys and values for `x` (`[1, seq, hidden]`), laid out `[1, kv_heads, seq, head_dim]`.
    /// Also what KV-fill strategies call to give skipped layers their entries.
    fn keys_values(&self, x: &Tensor, rope: &Rope, offset: usize) -> Result<(Tensor, Tensor)> {
        self.split_kv(&self.kv_proj.forward(x)?, rope, offset)
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        offset: usize,
        mask: Option<&Tensor>,
        kv: &mut LayerKv,
    ) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let q_width = self.num_heads * self.head_dim;
        let qkv = self.qkv_proj.forward(x)?;
        let q = qkv.narrow(2, 0, q_width)?.contiguous()?.reshape((
            b,
            s,
            self.num_heads,
            self.head_dim,
        ))?;
        let q = rope.apply(&q, offset)?.transpose(1, 2)?.contiguous()?;
        let kv_width = qkv.dim(2)? - q_width;
        let (k, v) = self.split_kv(&qkv.narrow(2, q_width, kv_width)?, rope, offset)?;
        let (k, v) = kv.append(&k, &v)?;
        let total = k.dim(2)?;

        // Grouped-query attention without copying K/V: the query heads that share a KV head
        // are folded into the row dimension, so one batched matmul per KV head does the work.
        let group = self.num_heads / self.num_kv_heads;
        let q = q.reshape((b, self.num_kv_heads, group * s, self.head_dim))?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (matmul(&q, &k.t()?)? * scale)?.to_dtype(DType::F32)?;
        let scores = match mask {
            Some(mask) => scores
                .reshape((b, self.num_kv_heads, group, s, total))?
                .broadcast_add(mask)?
                .reshape((b, self.num_kv_heads, group * s, total))?,
            None => scores,
        };
        let weights = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
        let out = matmul(&weights, &v)?
            .reshape((b, self.num_heads, s, self.head_dim))?
            .transpose(1, 2)?
            .reshape((b, s, self.num_heads * self.head_dim))?;
        Ok(self.o_proj.forward(&out)?)
    }
}

struct Mlp {
    /// gate and up projections stacked: one matmul, then split.
    gate_up_proj: Linear,
    down_proj: Linear,
    intermediate: usize,
}

impl Mlp {
    fn load(weights: &dyn WeightSource, prefix: &str, c: &ModelConfig) -> Result<Self> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        Ok(Self {
            gate_up_proj: stack_linear(&[
                linear(weights, prefix, "gate_proj", h, i, false)?,
                linear(weights, prefix, "up_proj", h, i, false)?,
            ])?,
            down_proj: linear(weights, prefix, "down_proj", i, h, false)?,
            intermediate: i,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate_up = self.gate_up_proj.forward(x)?;
        let last = gate_up.rank() - 1;
        let gate = candle_nn::ops::silu(&gate_up.narrow(last, 0, self.intermediate)?)?;
        let up = gate_up.narrow(last, self.intermediate, self.intermediate)?;
        Ok(self.down_proj.forward(&(gate * up)?)?)
    }
}

struct DecoderLayer {
    input_layernorm: Tensor,
    attention: Attention,
    post_attention_layernorm: Tensor,
    mlp: Mlp,
    eps: f32,
}

/// One block's result, kept apart so hooks can read each branch.
struct BlockOutput {
    attn_out: Tensor,
    mlp_out: Tensor,
    hidden: Tensor,
}

impl DecoderLayer {
    fn load(weights: &dyn WeightSource, prefix: &str, c: &ModelConfig) -> Result<Self> {
        let h = c.hidden_size;
        Ok(Self {
            input_layernorm: norm_weight(weights, prefix, "input_layernorm", h)?,
            attention: Attention::load(weights, &format!("{prefix}.self_attn"), c)?,
            post_attention_layernorm: norm_weight(weights, prefix, "post_attention_layernorm", h)?,
            mlp: Mlp::load(weights, &format!("{prefix}.mlp"), c)?,
            eps: c.rms_norm_eps as f32,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        offset: usize,
        mask: Option<&Tensor>,
        kv: &mut LayerKv,
    ) -> Result<BlockOutput> {
        self.forward_with(x, |normed| {
            self.attention.forward(normed, rope, offset, mask, kv)
        })
    }

    /// The block with its attention computed by `attend` from the normed input: one sequence's
    /// attention, or one per row of a batch of sequences (see `batch`).
    fn forward_with(
        &self,
        x: &Tensor,
        attend: impl FnOnce(&Tensor) -> Result<Tensor>,
    ) -> Result<BlockOutput> {
        let normed = candle_nn::ops::rms_norm(x, &self.input_layernorm, self.eps)?;
        let attn_out = attend(&normed)?;
        let mid = (x + &attn_out)?;
        let normed = candle_nn::ops::rms_norm(&mid, &self.post_attention_layernorm, self.eps)?;
        let mlp_out = self.mlp.forward(&normed)?;
        let hidden = (mid + &mlp_out)?;
        Ok(BlockOutput {
            attn_out,
            mlp_out,
            hidden,
        })
    }
}

/// Final norm + lm_head: the dense output and, on the last token only, the hooks' probe.
pub struct LmHead {
    norm: Tensor,
    weight: Matrix,
    eps: f32,
}

impl LmHead {
    /// Logits of every row of `hidden` (`[.., hidden]`), as f32.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let normed = candle_nn::ops::rms_norm(hidden, &self.norm, self.eps)?;
        Ok(matrix_matmul_t(&normed, &self.weight)?.to_dtype(DType::F32)?)
    }

    /// Logits of the last token of `hidden` (`[1, seq, hidden]`), over all ids or only `ids`.
    pub fn last_token_logits(&self, hidden: &Tensor, ids: Option<&[u32]>) -> Result<Vec<f32>> {
        let seq = hidden.dim(1)?;
        let last = hidden.i((.., seq - 1..seq, ..))?.squeeze(0)?;
        let normed = candle_nn::ops::rms_norm(&last, &self.norm, self.eps)?;
        let weight = match ids {
            None => self.weight.clone(),
            Some(ids) => {
                check_vocabulary("probe token", ids, self.weight.rows()?)?;
                self.weight.select_rows(ids)?
            }
        };
        Ok(matrix_matmul_t(&normed, &weight)?
            .squeeze(0)?
            .to_dtype(DType::F32)?
            .to_vec1()?)
    }
}

/// Which positions a pass returns logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outputs {
    /// The last token only (generation, classification).
    LastToken,
    /// Every token of the pass (speculative verification, perplexity).
    AllTokens,
}

/// Where and why a pass stopped early.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExitRecord {
    /// Block after which the pass stopped, counted from 1.
    pub layer: usize,
    /// The hook that asked for it.
    pub hook: String,
}

/// The result of one forward pass.
#[derive(Debug)]
pub struct PassOutput {
    /// `[positions, vocab]` f32 logits (one row with [`Outputs::LastToken`]).
    pub logits: Tensor,
    pub exit: Option<ExitRecord>,
    /// Blocks that actually ran.
    pub layers_run: usize,
    /// Blocks (0-based) that did not run: planned skips and everything after an exit.
    pub skipped: Vec<usize>,
}

impl PassOutput {
    /// Logits of the last position as a vector.
    pub fn last_logits(&self) -> Result<Vec<f32>> {
        let rows = self.logits.dim(0)?;
        Ok(self.logits.i(rows - 1)?.to_vec1()?)
    }
}

pub struct DecoderModel {
    pub config: ModelConfig,
    /// `[vocab, hidden]`; quantized in GGUF files (rows are dequantized as tokens are looked up).
    embed_tokens: Matrix,
    layers: Vec<DecoderLayer>,
    head: LmHead,
    rope: Rope,
    device: Device,
    dtype: DType,
}

impl DecoderModel {
    /// A model from safetensors through candle's `VarBuilder` (HF directories, tests).
    pub fn load(vb: VarBuilder, config: ModelConfig) -> Result<Self> {
        Self::from_weights(&SafetensorsWeights(vb), config)
    }

    /// A model from any weight source, named the Hugging Face way.
    pub fn from_weights(weights: &dyn WeightSource, config: ModelConfig) -> Result<Self> {
        let c = &config;
        let embed_tokens =
            weights.matrix("model.embed_tokens.weight", c.vocab_size, c.hidden_size)?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| DecoderLayer::load(weights, &format!("model.layers.{i}"), c))
            .collect::<Result<Vec<_>>>()?;
        let weight = if c.tie_word_embeddings {
            embed_tokens.clone()
        } else {
            weights
                .matrix("lm_head.weight", c.vocab_size, c.hidden_size)
                .context("weight lm_head.weight (the model's embeddings are not tied)")?
        };
        let head = LmHead {
            norm: norm_weight(weights, "model", "norm", c.hidden_size)?,
            weight,
            eps: c.rms_norm_eps as f32,
        };
        let rope = Rope::new(c, weights.dtype(), weights.device())?;
        Ok(Self {
            embed_tokens,
            layers,
            head,
            rope,
            device: weights.device().clone(),
            dtype: weights.dtype(),
            config,
        })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn head(&self) -> &LmHead {
        &self.head
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

    /// Embeddings of `tokens` as `[1, seq, hidden]`.
    pub fn embed(&self, tokens: &[u32]) -> Result<Tensor> {
        check_vocabulary("token", tokens, self.config.vocab_size)?;
        let rows = match &self.embed_tokens {
            Matrix::Dense(table) => table.index_select(&Tensor::new(tokens, &self.device)?, 0)?,
            Matrix::Quantized(table) => {
                let width = table.cols();
                let mut values = vec![0f32; tokens.len() * width];
                for (row, &id) in values.chunks_mut(width).zip(tokens) {
                    table.dequantize_row(id as usize, row);
                }
                Tensor::from_vec(values, (tokens.len(), width), &self.device)?
                    .to_dtype(self.dtype)?
            }
            Matrix::Stacked(_) => bail!("the embedding table cannot be a stacked matrix"),
        };
        Ok(rows.unsqueeze(0)?)
    }

    /// Additive causal mask `[seq, offset + seq]` (with Mistral's sliding window), or `None`
    /// when a single token may see everything before it.
    fn mask(&self, seq: usize, offset: usize) -> Result<Option<Tensor>> {
        let total = offset + seq;
        let window = self.config.sliding_window;
        if seq == 1 && window.is_none_or(|w| total <= w) {
            return Ok(None);
        }
        let mut values = Vec::with_capacity(seq * total);
        for i in 0..seq {
            let pos = offset + i;
            for j in 0..total {
                let future = j > pos;
                let too_old = window.is_some_and(|w| pos >= w && j <= pos - w);
                values.push(if future || too_old {
                    f32::NEG_INFINITY
                } else {
                    0.0
                });
            }
        }
        Ok(Some(Tensor::from_vec(values, (seq, total), &self.device)?))
    }

    /// Run `tokens` through the model after what `cache` already holds.
    ///
    /// With a hook, the engine asks it for a skip plan first, then shows it every block's
    /// output; on [`Decision::Exit`] the remaining blocks are skipped and the logits come from
    /// the exited hidden state. Without a hook the pass is the plain dense forward.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        mut hook: Option<&mut dyn LayerHook>,
        outputs: Outputs,
    ) -> Result<PassOutput> {
        if tokens.is_empty() {
            bail!("a forward pass needs at least one token");
        }
        let offset = cache.seq_len();
        let seq = tokens.len();
        if offset + seq > self.config.max_position_embeddings {
            bail!(
                "sequence of {} tokens exceeds max_position_embeddings ({})",
                offset + seq,
                self.config.max_position_embeddings
            );
        }
        let n = self.layers.len();
        let plan = match hook.as_deref_mut() {
            Some(h) => h.begin_pass(&PassInfo {
                num_layers: n,
                num_tokens: seq,
                offset,
            })?,
            None => SkipPlan::none(),
        };
        let mask = self.mask(seq, offset)?;
        let mut x = self.embed(tokens)?;
        let mut skipped = Vec::new();
        let mut exit = None;
        let mut exit_probe = None;
        for (index, layer) in self.layers.iter().enumerate() {
            if exit.is_some() || plan.skips(index) {
                skipped.push(index);
                continue;
            }
            let kv = cache.layer_mut(index);
            if kv.len() != offset {
                bail!(
                    "KV cache hole: layer {} holds {} positions but this pass starts at {offset}; \
                     an earlier pass skipped it. Fill the cache (a KV fill strategy) or start a new sequence",
                    index + 1,
                    kv.len()
                );
            }
            let out = layer.forward(&x, &self.rope, offset, mask.as_ref(), kv)?;
            if let Some(h) = hook.as_deref_mut() {
                let mut view = LayerView::new(
                    index,
                    n,
                    &x,
                    &out.attn_out,
                    &out.mlp_out,
                    &out.hidden,
                    &self.head,
                );
                if h.after_layer(&mut view)? == Decision::Exit && index + 1 < n {
                    exit = Some(ExitRecord {
                        layer: index + 1,
                        hook: h.name().to_string(),
                    });
                    exit_probe = view.take_full_probe();
                }
            }
            x = out.hidden;
        }
        let logits = match (outputs, exit_probe) {
            (Outputs::LastToken, Some(probe)) => {
                let vocab = probe.logits().len();
                Tensor::from_slice(probe.logits(), (1, vocab), &self.device)?
            }
            (Outputs::LastToken, None) => self.head.logits(&x.i((0, seq - 1..seq))?)?,
            (Outputs::AllTokens, _) => self.head.logits(&x.squeeze(0)?)?,
        };
        Ok(PassOutput {
            logits,
            exit,
            layers_run: n - skipped.len(),
            skipped,
        })
    }

    /// Give layer `index` K/V entries for `hidden` (`[1, seq, hidden]`, the residual stream that
    /// would have entered it) at the cache's current length for that layer. Used by KV fill
    /// strategies after an early exit.
    pub fn fill_layer_kv(&self, index: usize, hidden: &Tensor, cache: &mut KvCache) -> Result<()> {
        let layer = &self.layers[index];
        let kv = cache.layer_mut(index);
        let offset = kv.len();
        let normed = candle_nn::ops::rms_norm(hidden, &layer.input_layernorm, layer.eps)?;
        let (k, v) = layer.attention.keys_values(&normed, &self.rope, offset)?;
        kv.append(&k, &v)?;
        Ok(())
    }

    /// Run block `index` alone on `x` at the layer's own cache offset (KV recompute strategy).
    pub fn run_layer(&self, index: usize, x: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let seq = x.dim(1)?;
        let kv = cache.layer_mut(index);
        let offset = kv.len();
        let mask = self.mask(seq, offset)?;
        let out = self.layers[index].forward(x, &self.rope, offset, mask.as_ref(), kv)?;
        Ok(out.hidden)
    }

    /// [`Self::run_layer`] keeping each branch: `(attn_out, mlp_out, hidden)`, for generation
    /// loops that carry rows besides the current token and still show hooks a [`LayerView`]
    /// (see `kv_fill`).
    pub fn run_layer_parts(
        &self,
        index: usize,
        x: &Tensor,
        cache: &mut KvCache,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let seq = x.dim(1)?;
        let kv = cache.layer_mut(index);
        let offset = kv.len();
        let mask = self.mask(seq, offset)?;
        let out = self.layers[index].forward(x, &self.rope, offset, mask.as_ref(), kv)?;
        Ok((out.attn_out, out.mlp_out, out.hidden))
    }
}
