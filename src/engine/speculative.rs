//! Self-speculative decoding: the model's own shallow blocks draft, all blocks verify.
//!
//! A round starts from a cache that holds every block of every verified position and the next
//! token `x` (decided by full-depth logits, not yet in the cache). Drafting feeds `x`, then each
//! draft, through the blocks the draft hook lets them reach; their deeper blocks wait in a
//! [`Backlog`]. The verify pass feeds the last draft through every block, carrying the waiting
//! positions along from the block each lacks, so it sees a complete cache and yields full-depth
//! logits for every drafted position in one batched pass. The longest agreeing prefix is kept
//! plus one token from the full-depth logits (correction or bonus), and the cache is truncated
//! back past the rejected drafts. The blocks a draft ran are exact (they attended to exact
//! entries), so verification reuses them instead of recomputing.
//!
//! Greedy output equals dense decoding token for token: on quantized (GGUF) weights a pass of up
//! to 8 rows computes each row to the bit as decoding it alone (the quantized matmuls and the
//! few-row attention are row-independent); on f32 / bf16 weights the batched matmul may round a
//! row differently in the last bit. Sampled output follows the dense distribution through the
//! standard accept/reject rule ([`accept_or_resample`]).

use super::block_set::BlockSet;
use super::draft_head::DraftHead;
use super::generate::{check_request, FinishReason, Generation, GenerationParams};
use super::kv_cache::KvCache;
use super::kv_fill::{step, step_with_draft_head, Backlog, Completed, KvFill};
use super::model::{DecoderModel, Outputs};
use super::modes::AdaptiveGeneration;
use super::sampling::Sampler;
use crate::hook::LayerHook;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::time::Instant;

/// What verification says about one draft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Rejected; this token (drawn from the residual distribution) replaces it.
    Replace(u32),
}

/// The speculative sampling rule: keep `draft` (drawn from `q`) with probability
/// min(1, p(draft)/q(draft)), else draw from norm(max(0, p − q)). The result is distributed as
/// `p` whatever `q` is. With greedy distributions (one token, probability 1) it keeps the draft
/// iff it is the full-depth argmax and otherwise replaces it by that argmax, drawing nothing.
pub fn accept_or_resample(
    p: &[(u32, f32)],
    q: &[(u32, f32)],
    draft: u32,
    sampler: &mut Sampler,
) -> Verdict {
    let prob = |dist: &[(u32, f32)], t: u32| dist.iter().find(|d| d.0 == t).map_or(0.0, |d| d.1);
    let (pd, qd) = (prob(p, draft), prob(q, draft));
    if qd > 0.0 {
        let keep = pd / qd;
        if keep >= 1.0 || (keep > 0.0 && sampler.uniform() < keep) {
            return Verdict::Accept;
        }
    }
    let q: HashMap<u32, f32> = q.iter().copied().collect();
    let residual: Vec<(u32, f32)> = p
        .iter()
        .map(|&(t, pt)| (t, (pt - q.get(&t).copied().unwrap_or(0.0)).max(0.0)))
        .filter(|r| r.1 > 0.0)
        .collect();
    let total: f32 = residual.iter().map(|r| r.1).sum();
    if total <= 0.0 {
        // p ≤ q everywhere means p = q up to rounding: p itself is the residual.
        return Verdict::Replace(sampler.draw(p));
    }
    let residual: Vec<(u32, f32)> = residual.into_iter().map(|(t, r)| (t, r / total)).collect();
    Verdict::Replace(sampler.draw(&residual))
}

/// Full-depth logits of completed positions, indexed from the round's first position.
fn record_logits(
    model: &DecoderModel,
    done: &Completed,
    round_start: usize,
    dense: &mut [Option<Vec<f32>>],
) -> Result<()> {
    let rows = model.head().logits(&done.hidden.squeeze(0)?)?.to_vec2()?;
    for (i, row) in rows.into_iter().enumerate() {
        let slot = (done.first_position + i)
            .checked_sub(round_start)
            .context("internal: a verified position was carried again")?;
        dense[slot] = Some(row);
    }
    Ok(())
}

/// What drafts the tokens the full model verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DraftSource {
    /// The model's own shallow passes, as deep as the plugin's policy (or a fixed layer) says.
    Layers,
    /// The tokens that followed the last n-gram where it occurred earlier in the context.
    PromptLookup,
    /// Prompt lookup — and skip-layer passes when [`DraftSettings::skip`] names blocks —
    /// verifying each round only the drafts this request's measured costs and acceptance say
    /// pay (none where drafts keep failing): never much slower than dense.
    Auto,
    /// The model with the blocks of [`DraftSettings::skip`] left out ([`super::skip_draft`]).
    SkipLayers,
}

impl DraftSource {
    pub const ALL: [DraftSource; 4] = [
        Self::Layers,
        Self::PromptLookup,
        Self::Auto,
        Self::SkipLayers,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Layers => "layers",
            Self::PromptLookup => "prompt_lookup",
            Self::Auto => "auto",
            Self::SkipLayers => "skip_layers",
        }
    }

    /// Whether drafting needs the model's layers and an exit policy to choose their depth.
    pub fn needs_policy(self) -> bool {
        self == Self::Layers
    }
}

impl std::str::FromStr for DraftSource {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .with_context(|| {
                format!(
                    "unknown draft source {s:?}: expected layers, prompt_lookup, auto or skip_layers"
                )
            })
    }
}

/// How much to draft per round (`[generation.draft]` in a plugin config).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DraftSettings {
    pub source: DraftSource,
    /// At most this many drafts per round.
    pub tokens: usize,
    /// Layer and skip-layer drafts: stop drafting after a draft whose own softmax top
    /// probability (at temperature 1) is below this: a draft that unsure is likely rejected,
    /// and so would every draft after it. 0 = always draft `tokens`.
    pub min_confidence: f32,
    /// Layer and skip-layer drafts: when above 0, the confidence bar adapts within a request,
    /// as Draft & Verify's adaptive draft exiting does: it starts at `min_confidence`, rises
    /// after a round that leaves the running acceptance below this target (fewer, surer
    /// drafts) and falls after one that leaves it above (longer drafts). 0 = the bar stays.
    pub target_acceptance: f32,
    /// Layer drafts: score only the first this-many tokens of the vocabulary at the draft's
    /// exit ([`DraftHead`]); 0 = the full head.
    pub vocab: usize,
    /// Prompt lookup: the longest n-gram matched (longest first, down to one token).
    pub ngram: usize,
    /// Skip-layer drafts: the blocks (counted from 1) a draft leaves out. With `auto`, a
    /// non-empty set lets it weigh skip-layer drafts against lookup drafts each round.
    pub skip: BlockSet,
}

impl Default for DraftSettings {
    fn default() -> Self {
        Self::fixed(4)
    }
}

/// Longest n-gram prompt lookup may match: beyond this a match is as good as certain.
pub const MAX_NGRAM: usize = 16;

/// Most drafts per round: rows beyond a few dozen make verification a prefill.
pub const MAX_DRAFT_TOKENS: usize = 64;

impl DraftSettings {
    /// `tokens` layer drafts per round.
    pub fn fixed(tokens: usize) -> Self {
        Self {
            source: DraftSource::Layers,
            tokens,
            min_confidence: 0.0,
            target_acceptance: 0.0,
            vocab: 0,
            ngram: 3,
            skip: BlockSet::new(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_DRAFT_TOKENS).contains(&self.tokens) {
            bail!(
                "draft tokens per round must be between 1 and {MAX_DRAFT_TOKENS}, got {}",
                self.tokens
            );
        }
        if !(0.0..=1.0).contains(&self.min_confidence) {
            bail!(
                "draft confidence must be in [0, 1], got {}",
                self.min_confidence
            );
        }
        if !(0.0..1.0).contains(&self.target_acceptance) {
            bail!(
                "draft target acceptance must be in [0, 1), got {}",
                self.target_acceptance
            );
        }
        if !(1..=MAX_NGRAM).contains(&self.ngram) {
            bail!(
                "draft ngram must be between 1 and {MAX_NGRAM}, got {}",
                self.ngram
            );
        }
        if self.source == DraftSource::SkipLayers && self.skip.is_empty() {
            bail!(
                "draft source skip_layers needs the blocks to leave out: [generation.draft] skip \
                 (or --draft-skip), counted from 1; `adainfer search-skip-draft` suggests a set"
            );
        }
        Ok(())
    }
}

/// The confidence a layer draft needs for drafting to go on: fixed, or adapted to keep this
/// request's running acceptance near a target ([`DraftSettings::target_acceptance`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfidenceBar {
    pub bar: f32,
    target: f32,
    /// Running acceptance (drafts kept / drafted per round, each new round weighted
    /// `Self::LEARN`), starting at the target.
    acceptance: f32,
}

impl ConfidenceBar {
    /// How far the bar moves after a round.
    pub const STEP: f32 = 0.05;
    const LEARN: f32 = 0.3;
    /// Never so strict that no draft passes.
    const HIGHEST: f32 = 0.99;

    pub fn new(draft: &DraftSettings) -> Self {
        Self {
            bar: draft.min_confidence,
            target: draft.target_acceptance,
            acceptance: draft.target_acceptance,
        }
    }

    /// After a round that kept `kept` of `drafted` drafts.
    pub fn update(&mut self, drafted: usize, kept: usize) {
        if self.target <= 0.0 || drafted == 0 {
            return;
        }
        let rate = kept as f32 / drafted as f32;
        self.acceptance += Self::LEARN * (rate - self.acceptance);
        self.bar = if self.acceptance < self.target {
            (self.bar + Self::STEP).min(Self::HIGHEST)
        } else {
            (self.bar - Self::STEP).max(0.0)
        };
    }
}

/// Top softmax probability of `logits`.
pub(super) fn confidence(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    1.0 / logits.iter().map(|&l| (l - max).exp()).sum::<f32>()
}

/// Where every speculative loop starts: the request checked, the prompt prefilled, the first
/// token sampled from its logits, and the decode clock started.
pub(super) struct SpeculativeStart {
    pub sampler: Sampler,
    pub cache: KvCache,
    pub out: AdaptiveGeneration,
    pub first: u32,
    pub decode_start: Instant,
}

pub(super) fn start_speculative(
    model: &DecoderModel,
    prompt: &[u32],
    params: &GenerationParams,
    draft: &DraftSettings,
) -> Result<SpeculativeStart> {
    check_request(model, prompt, params.max_tokens)?;
    draft.validate()?;
    if !params.sampling.rules.is_plain() {
        // Drafts are sampled and then rejected: penalties and logprobs would need each
        // verified position's history, which these loops do not keep.
        bail!(
            "speculative decoding does not apply penalties, logit bias or logprobs; \
             use early exit or dense for them"
        );
    }
    let mut sampler = Sampler::new(params.sampling.clone())?;
    let mut cache = model.new_cache();
    let start = Instant::now();
    let logits = model
        .forward(prompt, &mut cache, None, Outputs::LastToken)?
        .last_logits()?;
    let generation = Generation {
        prompt_tokens: prompt.len(),
        tokens: Vec::new(),
        finish_reason: FinishReason::Length,
        prefill_seconds: start.elapsed().as_secs_f64(),
        decode_seconds: 0.0,
    };
    let first = sampler.sample(&logits);
    Ok(SpeculativeStart {
        sampler,
        cache,
        out: AdaptiveGeneration::new(generation, Vec::new()),
        first,
        decode_start: Instant::now(),
    })
}

/// Generate losslessly, `draft_hook` choosing each draft's depth and `draft` how many drafts
/// a round makes. `on_token` sees tokens (with the depth of the pass that proposed them) as
/// they are verified.
pub fn generate_self_speculative(
    model: &DecoderModel,
    prompt: &[u32],
    params: &GenerationParams,
    draft_hook: &mut dyn LayerHook,
    draft: &DraftSettings,
    mut on_token: impl FnMut(u32, usize) -> Result<()>,
) -> Result<AdaptiveGeneration> {
    let SpeculativeStart {
        mut sampler,
        mut cache,
        mut out,
        first: mut next,
        decode_start,
    } = start_speculative(model, prompt, params, draft)?;
    let n = model.num_layers();
    let mut backlog = Backlog::default();
    // (token, depth of the pass that proposed it) settled by the last round.
    let mut settled = vec![(next, n)];
    let mut bar = ConfidenceBar::new(draft);
    let draft_head = match draft.vocab {
        0 => None,
        n => Some(DraftHead::new(model, n).context("[generation.draft] vocab")?),
    };
    'generation: loop {
        for &(t, depth) in &settled {
            if params.stop_tokens.contains(&t) {
                out.generation.finish_reason = FinishReason::Stop;
                break 'generation;
            }
            out.generation.tokens.push(t);
            out.depths.push(depth);
            on_token(t, depth)?;
        }
        let produced = out.generation.tokens.len();
        if produced >= params.max_tokens {
            break;
        }
        // Leave room for the correction/bonus token the round always adds.
        let budget = draft.tokens.min(params.max_tokens - produced - 1);
        let round_start = cache.seq_len();
        let mut dense = vec![None; budget + 1];
        let mut drafts = Vec::with_capacity(budget);
        let mut feed = next;
        let mut unsure = false;
        while drafts.len() < budget && !unsure && !params.stop_tokens.contains(&feed) {
            let pass = step_with_draft_head(
                model,
                &[feed],
                &mut cache,
                &mut backlog,
                Some(&mut *draft_hook),
                KvFill::Recompute,
                draft_head.as_ref(),
            )?;
            out.decode_hook_seconds += pass.hook_seconds;
            out.draft_blocks += pass.depth;
            if let Some(done) = &pass.completed {
                record_logits(model, done, round_start, &mut dense)?;
            }
            unsure = confidence(&pass.logits) < bar.bar;
            let q = sampler.distribution(&pass.logits);
            feed = sampler.draw(&q);
            drafts.push((feed, q, pass.depth));
        }
        let verify = step(
            model,
            &[feed],
            &mut cache,
            &mut backlog,
            None,
            KvFill::Recompute,
        )?;
        let done = verify
            .completed
            .context("internal: verification stopped early")?;
        record_logits(model, &done, round_start, &mut dense)?;
        let dense_at = |i: usize| -> Result<&Vec<f32>> {
            dense[i]
                .as_ref()
                .with_context(|| format!("internal: no full-depth logits for draft {i}"))
        };
        settled.clear();
        let mut correction = None;
        for (i, (draft, q, depth)) in drafts.iter().enumerate() {
            let p = sampler.distribution(dense_at(i)?);
            match accept_or_resample(&p, q, *draft, &mut sampler) {
                Verdict::Accept => settled.push((*draft, *depth)),
                Verdict::Replace(t) => {
                    correction = Some(t);
                    break;
                }
            }
        }
        out.rounds += 1;
        out.drafted += drafts.len();
        out.accepted += settled.len();
        bar.update(drafts.len(), settled.len());
        next = match correction {
            Some(t) => t,
            None => sampler.sample(dense_at(drafts.len())?),
        };
        settled.push((next, n));
        // Keep the round's first token and the accepted drafts; forget the rejected ones.
        cache.truncate(round_start + settled.len());
    }
    out.generation.decode_seconds = decode_start.elapsed().as_secs_f64();
    Ok(out)
}
