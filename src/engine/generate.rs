//! Dense generation: prefill the prompt, then decode one token at a time with the KV cache.
//!
//! Early exit during decode (and the KV fill strategies it needs) lives in the plugin's
//! generation modes; here a hook may only watch, and a pass that exits early leaves holes that
//! the next pass refuses to attend over (see [`super::model::DecoderModel::forward`]).

use super::model::{check_vocabulary, DecoderModel, Outputs};
use super::sampling::{Sampler, SamplingParams};
use anyhow::{bail, Result};
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct GenerationParams {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Stop when one of these is produced (it is not included in the output).
    pub stop_tokens: Vec<u32>,
}

impl GenerationParams {
    /// Greedy, exactly `max_tokens` tokens: no stop token ends it early (random-weight models
    /// have no real end of text).
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            max_tokens,
            sampling: SamplingParams::greedy(),
            stop_tokens: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token was produced.
    Stop,
    /// `max_tokens` was reached.
    Length,
}

#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub prompt_tokens: usize,
    pub tokens: Vec<u32>,
    pub finish_reason: FinishReason,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
}

impl Generation {
    /// Decode throughput (tokens after the first, which the prefill produced).
    pub fn decode_tokens_per_second(&self) -> f64 {
        let n = self.tokens.len().saturating_sub(1);
        if self.decode_seconds > 0.0 {
            n as f64 / self.decode_seconds
        } else {
            0.0
        }
    }
}

/// Check the request fits the model before any compute is spent.
pub fn check_request(model: &DecoderModel, prompt: &[u32], max_tokens: usize) -> Result<()> {
    if prompt.is_empty() {
        bail!("the prompt is empty: give at least one token");
    }
    check_vocabulary("prompt token", prompt, model.config.vocab_size)?;
    let limit = model.config.max_position_embeddings;
    if prompt.len() > limit {
        bail!(
            "the prompt has {} tokens, more than max_position_embeddings ({limit})",
            prompt.len()
        );
    }
    if prompt.len().saturating_add(max_tokens) > limit {
        bail!(
            "prompt ({} tokens) + max_tokens ({max_tokens}) exceeds max_position_embeddings ({limit})",
            prompt.len()
        );
    }
    Ok(())
}

/// Greedy or sampled dense generation, calling `on_token` as each token is produced (streaming).
pub fn generate_dense(
    model: &DecoderModel,
    prompt: &[u32],
    params: &GenerationParams,
    mut on_token: impl FnMut(u32) -> Result<()>,
) -> Result<Generation> {
    check_request(model, prompt, params.max_tokens)?;
    let mut sampler = Sampler::for_prompt(params.sampling.clone(), prompt)?;
    let mut cache = model.new_cache();
    let mut tokens = Vec::new();
    let start = Instant::now();
    let mut logits = model
        .forward(prompt, &mut cache, None, Outputs::LastToken)?
        .last_logits()?;
    let prefill_seconds = start.elapsed().as_secs_f64();
    let decode_start = Instant::now();
    let mut finish_reason = FinishReason::Length;
    while tokens.len() < params.max_tokens {
        let next = sampler.sample(&logits);
        if params.stop_tokens.contains(&next) {
            finish_reason = FinishReason::Stop;
            break;
        }
        tokens.push(next);
        on_token(next)?;
        if tokens.len() == params.max_tokens {
            break;
        }
        logits = model
            .forward(&[next], &mut cache, None, Outputs::LastToken)?
            .last_logits()?;
    }
    Ok(Generation {
        prompt_tokens: prompt.len(),
        tokens,
        finish_reason,
        prefill_seconds,
        decode_seconds: decode_start.elapsed().as_secs_f64(),
    })
}
