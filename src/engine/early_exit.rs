//! Generation with per-token early exit: a hook decides where each token stops, and a
//! [`KvFill`] strategy keeps the KV cache usable for the tokens after it.

use super::generate::{check_request, FinishReason, Generation, GenerationParams};
use super::kv_fill::{flush, step, Backlog, KvFill};
use super::model::{DecoderModel, Outputs};
use super::modes::AdaptiveGeneration;
use super::sampling::Sampler;
use crate::hook::{Decision, LayerHook, LayerView};
use anyhow::{bail, Result};
use std::time::Instant;

/// Exits every pass after block `layer` (1-based): the simplest policy, and a fixed draft
/// depth for self-speculative decoding. Reads no probe, so it costs nothing.
#[derive(Debug, Clone)]
pub struct FixedExit {
    pub layer: usize,
}

impl FixedExit {
    pub fn new(layer: usize, num_layers: usize) -> Result<Self> {
        if layer == 0 || layer > num_layers {
            bail!("exit layer must be in 1..={num_layers} (the model's blocks), got {layer}");
        }
        Ok(Self { layer })
    }
}

impl LayerHook for FixedExit {
    fn name(&self) -> &str {
        "fixed_exit"
    }

    fn after_layer(&mut self, view: &mut LayerView<'_>) -> Result<Decision> {
        Ok(if view.number() >= self.layer {
            Decision::Exit
        } else {
            Decision::Continue
        })
    }
}

/// Generate with `hook` deciding each token's exit and `fill` repairing the cache.
/// With [`KvFill::DenseAfterPrefill`] only the prompt pass may exit; the prompt's missing
/// entries are filled before decoding (counted in `prefill_seconds`), then decode is dense.
pub fn generate_early_exit(
    model: &DecoderModel,
    prompt: &[u32],
    params: &GenerationParams,
    hook: &mut dyn LayerHook,
    fill: KvFill,
    mut on_token: impl FnMut(u32, usize) -> Result<()>,
) -> Result<AdaptiveGeneration> {
    check_request(model, prompt, params.max_tokens)?;
    let n = model.num_layers();
    let mut sampler = Sampler::for_prompt(params.sampling.clone(), prompt)?;
    let mut cache = model.new_cache();
    let mut backlog = Backlog::default();
    let start = Instant::now();
    let first = step(model, prompt, &mut cache, &mut backlog, Some(hook), fill)?;
    let (mut logits, mut depth) = (first.logits, first.depth);
    let dense_decode = fill == KvFill::DenseAfterPrefill;
    if dense_decode {
        flush(model, &mut cache, &mut backlog)?;
    }
    let prefill_seconds = start.elapsed().as_secs_f64();
    let decode_start = Instant::now();
    let (mut tokens, mut depths) = (Vec::new(), Vec::new());
    let mut decode_hook_seconds = 0.0;
    let mut finish_reason = FinishReason::Length;
    while tokens.len() < params.max_tokens {
        let next = sampler.sample(&logits);
        if params.stop_tokens.contains(&next) {
            finish_reason = FinishReason::Stop;
            break;
        }
        tokens.push(next);
        depths.push(depth);
        on_token(next, depth)?;
        if tokens.len() == params.max_tokens {
            break;
        }
        if dense_decode {
            logits = model
                .forward(&[next], &mut cache, None, Outputs::LastToken)?
                .last_logits()?;
            depth = n;
        } else {
            let out = step(model, &[next], &mut cache, &mut backlog, Some(hook), fill)?;
            decode_hook_seconds += out.hook_seconds;
            (logits, depth) = (out.logits, out.depth);
        }
    }
    let generation = Generation {
        prompt_tokens: prompt.len(),
        tokens,
        finish_reason,
        prefill_seconds,
        decode_seconds: decode_start.elapsed().as_secs_f64(),
    };
    let mut out = AdaptiveGeneration::new(generation, depths);
    out.decode_hook_seconds = decode_hook_seconds;
    Ok(out)
}
