//! Skip-layer drafts (Draft & Verify, arXiv 2309.08168; SWIFT, arXiv 2410.06916): the model
//! drafts with a fixed set of its blocks left out, one token per pass through the rest, and the
//! full model verifies every draft in one pass (`lookup_decode`).
//!
//! The blocks a draft runs see the draft's own inexact hidden states, so their K/V entries at
//! drafted positions are inexact too: the cache is rolled back to the round's start after
//! drafting, and verification recomputes every drafted position in every block. Which blocks
//! to leave out is the model's own affair; `eval::skip_search` looks for a set.

use super::block_set::BlockSet;
use super::kv_cache::KvCache;
use super::model::{DecoderModel, Outputs};
use super::sampling::argmax;
use super::speculative::{confidence, ConfidenceBar, DraftSettings};
use crate::hook::{Decision, LayerHook, LayerView, PassInfo, SkipPlan};
use anyhow::{Context, Result};

/// The hook that leaves a fixed set of blocks out of every pass; it never reads a layer.
pub struct LeaveOut(SkipPlan);

impl LeaveOut {
    pub fn new(skip: &BlockSet) -> Self {
        Self(skip.to_skip_plan())
    }
}

impl LayerHook for LeaveOut {
    fn name(&self) -> &str {
        "leave_out"
    }
    fn begin_pass(&mut self, _info: &PassInfo) -> Result<SkipPlan> {
        Ok(self.0.clone())
    }
    fn after_layer(&mut self, _view: &mut LayerView<'_>) -> Result<Decision> {
        Ok(Decision::Continue)
    }
    fn watches_layers(&self) -> bool {
        false
    }
}

/// Drafts a round's tokens with `skip`'s blocks left out.
pub struct SkipDrafter {
    hook: LeaveOut,
    /// Blocks each draft pass runs.
    pub blocks_run: usize,
    /// Drafting stops after a draft less sure than this (fixed or adapted per round).
    pub bar: ConfidenceBar,
}

impl SkipDrafter {
    pub fn new(model: &DecoderModel, draft: &DraftSettings) -> Result<Self> {
        let n = model.num_layers();
        draft
            .skip
            .check_fits(n)
            .context("[generation.draft] skip")?;
        Ok(Self {
            hook: LeaveOut::new(&draft.skip),
            blocks_run: n - draft.skip.len(),
            bar: ConfidenceBar::new(draft),
        })
    }

    /// Up to `budget` greedy drafts continuing from `next` (settled, not yet in `cache`); stops
    /// early after a stop token or a draft below the confidence bar. `cache` is left as it was.
    pub fn draft(
        &mut self,
        model: &DecoderModel,
        cache: &mut KvCache,
        next: u32,
        budget: usize,
        stop_tokens: &[u32],
    ) -> Result<Vec<u32>> {
        let round_start = cache.seq_len();
        let mut drafts = Vec::with_capacity(budget);
        let mut feed = next;
        while drafts.len() < budget && !stop_tokens.contains(&feed) {
            let logits = model
                .forward(&[feed], cache, Some(&mut self.hook), Outputs::LastToken)?
                .last_logits()?;
            feed = argmax(&logits);
            drafts.push(feed);
            if confidence(&logits) < self.bar.bar {
                break;
            }
        }
        // The left-out blocks never got these positions; the others got inexact entries.
        cache.truncate(round_start);
        Ok(drafts)
    }
}
