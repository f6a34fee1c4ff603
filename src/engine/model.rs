//! The decoder every family runs, read top to bottom:
//! embed → N × block → final norm → lm_head. What a block is comes from the family (`arch/`);
//! this loop, the KV cache, masks and hooks are the same for all.
//!
//! [`DecoderModel::forward`] is where the [`LayerHook`] door sits: after every block it may hand
//! the hidden states to a hook and stop the pass there.

use super::arch::ModelParts;
use super::config::ModelConfig;
use super::kv_cache::{KvCache, LayerKv};
use super::layers::block::{Block, BlockOutput};
use super::layers::embedding::Embedding;
pub use super::layers::head::{check_vocabulary, LmHead};

mod batch;
use super::weights::{SafetensorsWeights, WeightSource};
use crate::hook::{Decision, ExitAnswer, LayerHook, LayerView, PassInfo, SkipPlan};
use anyhow::{bail, Result};
use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;

/// Additive causal masks of one pass, one per attention window the model has.
struct Masks(Vec<(Option<usize>, Option<Tensor>)>);

impl Masks {
    fn new(windows: &[Option<usize>], seq: usize, offset: usize, device: &Device) -> Result<Self> {
        windows
            .iter()
            .map(|&w| Ok((w, causal_mask(seq, offset, w, device)?)))
            .collect::<Result<_>>()
            .map(Self)
    }

    fn get(&self, window: Option<usize>) -> Option<&Tensor> {
        self.0
            .iter()
            .find(|(w, _)| *w == window)
            .and_then(|(_, m)| m.as_ref())
    }
}

/// Additive causal mask `[seq, offset + seq]` (with a sliding window: each position sees
/// itself and the `window - 1` before it), or `None` when a single token may see everything
/// before it.
fn causal_mask(
    seq: usize,
    offset: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Option<Tensor>> {
    let total = offset + seq;
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
    Ok(Some(Tensor::from_vec(values, (seq, total), device)?))
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
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ExitRecord {
    /// Block after which the pass stopped, counted from 1.
    pub layer: usize,
    /// The hook that asked for it.
    pub hook: String,
    /// The hook's own answer over a task's label tokens, if it gave one (a learned exit head).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<ExitAnswer>,
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
    embedding: Embedding,
    layers: Vec<Box<dyn Block>>,
    head: LmHead,
    /// The distinct attention windows of the blocks (`None`: full), for building masks.
    windows: Vec<Option<usize>>,
    device: Device,
    dtype: DType,
}

impl DecoderModel {
    /// A model from safetensors through candle's `VarBuilder` (HF directories, tests).
    pub fn load(vb: VarBuilder, config: ModelConfig) -> Result<Self> {
        Self::from_weights(&SafetensorsWeights::new(vb), config)
    }

    /// A model from any weight source, named the Hugging Face way, built by its family.
    pub fn from_weights(weights: &dyn WeightSource, config: ModelConfig) -> Result<Self> {
        let ModelParts {
            embedding,
            blocks,
            head,
        } = config.family.build(weights, &config)?;
        let mut windows: Vec<Option<usize>> = Vec::new();
        for block in &blocks {
            let w = block.attention().window();
            if !windows.contains(&w) {
                windows.push(w);
            }
        }
        Ok(Self {
            embedding,
            layers: blocks,
            head,
            windows,
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

    /// Embeddings of `tokens`, the first at position `offset`, as `[1, seq, hidden]`.
    pub fn embed(&self, tokens: &[u32], offset: usize) -> Result<Tensor> {
        check_vocabulary("token", tokens, self.config.vocab_size)?;
        let positions: Vec<usize> = (offset..offset + tokens.len()).collect();
        Ok(self.embedding.lookup(tokens, &positions)?.unsqueeze(0)?)
    }

    /// Block `index` on `x` (`[1, seq, hidden]`) at the layer's own cache offset.
    fn run_block(
        &self,
        index: usize,
        x: &Tensor,
        masks: &Masks,
        kv: &mut LayerKv,
    ) -> Result<BlockOutput> {
        let block = &self.layers[index];
        let attention = block.attention();
        let mask = masks.get(attention.window());
        let offset = kv.len();
        block.forward(x, &mut |normed| attention.forward(normed, offset, mask, kv))
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
        let masks = Masks::new(&self.windows, seq, offset, &self.device)?;
        let mut x = self.embed(tokens, offset)?;
        let mut skipped = Vec::new();
        let mut exit = None;
        let mut exit_probe = None;
        for index in 0..n {
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
            let out = self.run_block(index, &x, &masks, kv)?;
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
                        answer: view.take_answer(),
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
        let block = &self.layers[index];
        let kv = cache.layer_mut(index);
        let offset = kv.len();
        let (k, v) = block
            .attention()
            .keys_values(&block.attention_input(hidden)?, offset)?;
        kv.append(&k, &v)?;
        Ok(())
    }

    /// Run block `index` alone on `x` at the layer's own cache offset (KV recompute strategy).
    pub fn run_layer(&self, index: usize, x: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        Ok(self.run_layer_parts(index, x, cache)?.2)
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
        let kv = cache.layer_mut(index);
        let window = self.layers[index].attention().window();
        let mask = Masks::new(&[window], x.dim(1)?, kv.len(), &self.device)?;
        let out = self.run_block(index, x, &mask, kv)?;
        Ok((out.attn_out, out.mlp_out, out.hidden))
    }
}
