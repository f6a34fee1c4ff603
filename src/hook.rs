//! The layer hook: the only door between the engine and a plugin.
//!
//! Before a forward pass the engine asks every hook for a [`SkipPlan`] (static policies skip
//! blocks this way). After every decoder block that ran, it hands the hook a [`LayerView`] of
//! the hidden states; the hook answers [`Decision::Continue`] or [`Decision::Exit`]. On exit the
//! engine skips every remaining block and returns the logits of the exited hidden state.
//!
//! A hook can ask the view for a [`Probe`]: final norm + lm_head on the last token only. The
//! view computes a probe once per layer and scope, however many hooks ask. The door depends on
//! nothing behind it: the engine hands the view a [`ProbeSource`], which its LM head implements.
//!
//! A hook that exits may also leave its own [`ExitAnswer`] on the view (a learned exit head's
//! scores over a task's label tokens); the engine hands it back with the pass, beside the LM
//! head's logits of the exited hidden state.

use anyhow::Result;
use candle_core::{IndexOp, Tensor};
use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Continue,
    Exit,
}

/// A hook's own answer at its exit: scores over `ids` (a task's label tokens) that replace the
/// LM head's over those tokens. A learned exit head reads the hidden state better than the
/// logit lens does in the middle of the model; the LM head is still run for everything else.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ExitAnswer {
    pub ids: Vec<u32>,
    pub logits: Vec<f32>,
}

impl ExitAnswer {
    /// The best of `ids` by this answer's scores.
    pub fn top1(&self) -> Option<u32> {
        self.ids
            .iter()
            .zip(&self.logits)
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(&id, _)| id)
    }
}

/// What a pass is about to do, told to hooks before it starts.
#[derive(Debug, Clone, Copy)]
pub struct PassInfo {
    pub num_layers: usize,
    /// Tokens fed in this pass (prompt length for prefill, 1 for a decode step).
    pub num_tokens: usize,
    /// Position of the first of them.
    pub offset: usize,
}

/// Blocks (0-based indices) to leave out of a pass, decided before it starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkipPlan {
    skip: BTreeSet<usize>,
}

impl SkipPlan {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn from_layers(layers: impl IntoIterator<Item = usize>) -> Self {
        Self {
            skip: layers.into_iter().collect(),
        }
    }

    pub fn skips(&self, index: usize) -> bool {
        self.skip.contains(&index)
    }

    pub fn layers(&self) -> impl Iterator<Item = usize> + '_ {
        self.skip.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.skip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.skip.is_empty()
    }

    pub fn union(mut self, other: SkipPlan) -> Self {
        self.skip.extend(other.skip);
        self
    }
}

/// What a probe needs from the model: its final norm + LM head on the last token of a hidden
/// state (`[1, seq, hidden]`), over all ids or only `ids`.
pub trait ProbeSource {
    fn last_token_logits(&self, hidden: &Tensor, ids: Option<&[u32]>) -> Result<Vec<f32>>;
}

/// A plugin that watches (and may stop) forward passes.
pub trait LayerHook {
    /// Short name used in reports ("gap_threshold", "shortgpt", …).
    fn name(&self) -> &str;

    /// Called once before each pass. Static policies return the blocks to skip.
    fn begin_pass(&mut self, _info: &PassInfo) -> Result<SkipPlan> {
        Ok(SkipPlan::none())
    }

    /// Called after every block that ran, the last one included (an exit there changes nothing,
    /// but observers see every layer).
    fn after_layer(&mut self, view: &mut LayerView<'_>) -> Result<Decision>;

    /// Whether `after_layer` may read a layer or exit. A hook that only plans skips answers
    /// false, and the engine may then run it over a batch of sequences with its plan, without
    /// showing it the layers.
    fn watches_layers(&self) -> bool {
        true
    }
}

/// Several hooks as one: plans are united, and the first hook to say exit stops the pass.
/// Every hook still sees every layer up to the exit, so observers and policies can be combined.
pub struct HookChain<'h> {
    hooks: Vec<&'h mut dyn LayerHook>,
    name: String,
}

impl<'h> HookChain<'h> {
    pub fn new(hooks: Vec<&'h mut dyn LayerHook>) -> Self {
        let name = hooks.iter().map(|h| h.name()).collect::<Vec<_>>().join("+");
        Self { hooks, name }
    }
}

impl LayerHook for HookChain<'_> {
    fn name(&self) -> &str {
        &self.name
    }

    fn begin_pass(&mut self, info: &PassInfo) -> Result<SkipPlan> {
        let mut plan = SkipPlan::none();
        for hook in &mut self.hooks {
            plan = plan.union(hook.begin_pass(info)?);
        }
        Ok(plan)
    }

    fn after_layer(&mut self, view: &mut LayerView<'_>) -> Result<Decision> {
        let mut decision = Decision::Continue;
        for hook in &mut self.hooks {
            if hook.after_layer(view)? == Decision::Exit {
                decision = Decision::Exit;
            }
        }
        Ok(decision)
    }

    fn watches_layers(&self) -> bool {
        self.hooks.iter().any(|h| h.watches_layers())
    }
}

/// What a hook sees after one block: `[1, seq, hidden]` tensors of the current pass.
pub struct LayerView<'a> {
    /// 0-based index of the block that just ran.
    pub index: usize,
    pub num_layers: usize,
    /// Residual stream entering the block.
    pub input: &'a Tensor,
    /// The attention branch's contribution to the residual stream.
    pub attn_out: &'a Tensor,
    /// The MLP branch's contribution.
    pub mlp_out: &'a Tensor,
    /// Residual stream leaving the block (`input + attn_out + mlp_out`).
    pub hidden: &'a Tensor,
    head: &'a dyn ProbeSource,
    full: Option<Probe>,
    subset: Option<Probe>,
    answer: Option<ExitAnswer>,
}

impl<'a> LayerView<'a> {
    pub(crate) fn new(
        index: usize,
        num_layers: usize,
        input: &'a Tensor,
        attn_out: &'a Tensor,
        mlp_out: &'a Tensor,
        hidden: &'a Tensor,
        head: &'a dyn ProbeSource,
    ) -> Self {
        Self {
            index,
            num_layers,
            input,
            attn_out,
            mlp_out,
            hidden,
            head,
            full: None,
            subset: None,
            answer: None,
        }
    }

    /// Layer number counted from 1, as in reports and `reference.json`.
    pub fn number(&self) -> usize {
        self.index + 1
    }

    /// Last-token row of a `[1, seq, hidden]` tensor as f32 values.
    pub fn last_token(t: &Tensor) -> Result<Vec<f32>> {
        let seq = t.dim(1)?;
        Ok(t.i((0, seq - 1))?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1()?)
    }

    /// Logit lens of the last token over the full vocabulary.
    pub fn probe(&mut self) -> Result<&Probe> {
        if self.full.is_none() {
            let logits = self.head.last_token_logits(self.hidden, None)?;
            self.full = Some(Probe::from_logits(None, logits));
        }
        Ok(self.full.as_ref().expect("just computed"))
    }

    /// Logit lens restricted to `ids` (a task's answer tokens): cheap with a large vocabulary.
    pub fn probe_tokens(&mut self, ids: &[u32]) -> Result<&Probe> {
        let cached = matches!(&self.subset, Some(p) if p.ids.as_deref() == Some(ids));
        if !cached {
            let logits = self.head.last_token_logits(self.hidden, Some(ids))?;
            self.subset = Some(Probe::from_logits(Some(ids.to_vec()), logits));
        }
        Ok(self.subset.as_ref().expect("just computed"))
    }

    /// Answer with `answer` instead of the LM head over its ids if the pass stops here. Only
    /// read when some hook exits at this layer.
    pub fn answer_with(&mut self, answer: ExitAnswer) {
        self.answer = Some(answer);
    }

    /// The answer a hook left at its exit.
    pub(crate) fn take_answer(&mut self) -> Option<ExitAnswer> {
        self.answer.take()
    }

    /// The full-vocabulary probe, if some hook already asked for it.
    pub(crate) fn take_full_probe(&mut self) -> Option<Probe> {
        self.full.take()
    }
}

/// Softmaxed logit lens of one token, over the full vocabulary or a subset of ids.
#[derive(Debug, Clone)]
pub struct Probe {
    ids: Option<Vec<u32>>,
    logits: Vec<f32>,
    probs: Vec<f32>,
    /// Indices into `probs`, best first (the top two, found once).
    best: [usize; 2],
}

impl Probe {
    pub fn from_logits(ids: Option<Vec<u32>>, logits: Vec<f32>) -> Self {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f64> = logits.iter().map(|&l| ((l - max) as f64).exp()).collect();
        let sum: f64 = exps.iter().sum();
        let probs: Vec<f32> = exps.iter().map(|e| (e / sum) as f32).collect();
        let mut best = [0usize, 0usize];
        let mut best_p = [f32::NEG_INFINITY, f32::NEG_INFINITY];
        for (i, &p) in probs.iter().enumerate() {
            if p > best_p[0] {
                best[1] = best[0];
                best_p[1] = best_p[0];
                best[0] = i;
                best_p[0] = p;
            } else if p > best_p[1] {
                best[1] = i;
                best_p[1] = p;
            }
        }
        Self {
            ids,
            logits,
            probs,
            best,
        }
    }

    fn token(&self, index: usize) -> u32 {
        match &self.ids {
            Some(ids) => ids[index],
            None => index as u32,
        }
    }

    /// The most likely token id.
    pub fn top1(&self) -> u32 {
        self.token(self.best[0])
    }

    /// p(top1).
    pub fn top_prob(&self) -> f32 {
        self.probs[self.best[0]]
    }

    /// p(top1) − p(top2): the paper's `gap` feature.
    pub fn gap(&self) -> f32 {
        let second = if self.probs.len() > 1 {
            self.probs[self.best[1]]
        } else {
            0.0
        };
        self.top_prob() - second
    }

    /// Shannon entropy (nats) of the probed distribution.
    pub fn entropy(&self) -> f32 {
        -self
            .probs
            .iter()
            .filter(|&&p| p > 0.0)
            .map(|&p| (p as f64) * (p as f64).ln())
            .sum::<f64>() as f32
    }

    /// The `k` most likely (token, probability) pairs, best first.
    pub fn top_k(&self, k: usize) -> Vec<(u32, f32)> {
        let mut order: Vec<usize> = (0..self.probs.len()).collect();
        let k = k.min(order.len());
        if k == 0 {
            return Vec::new();
        }
        order.select_nth_unstable_by(k - 1, |&a, &b| self.probs[b].total_cmp(&self.probs[a]));
        order.truncate(k);
        order.sort_by(|&a, &b| self.probs[b].total_cmp(&self.probs[a]).then(a.cmp(&b)));
        order
            .into_iter()
            .map(|i| (self.token(i), self.probs[i]))
            .collect()
    }

    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    pub fn probs(&self) -> &[f32] {
        &self.probs
    }

    /// The ids the probe covers (`None`: the full vocabulary, ids are indices).
    pub fn ids(&self) -> Option<&[u32]> {
        self.ids.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_gap_and_top() {
        let p = Probe::from_logits(None, vec![0.0, 2.0, 1.0, -1.0]);
        assert_eq!(p.top1(), 1);
        let probs = p.probs().to_vec();
        assert!((p.gap() - (probs[1] - probs[2])).abs() < 1e-7);
        assert_eq!(
            p.top_k(2).iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn subset_probe_maps_ids() {
        let p = Probe::from_logits(Some(vec![275, 289]), vec![0.5, 3.0]);
        assert_eq!(p.top1(), 289);
        assert!(p.gap() > 0.8);
    }

    #[test]
    fn skip_plans_unite() {
        let plan = SkipPlan::from_layers([3, 1]).union(SkipPlan::from_layers([2, 3]));
        assert_eq!(plan.layers().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(plan.skips(2) && !plan.skips(0));
    }
}
