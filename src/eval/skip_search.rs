//! Which blocks a skip-layer draft should leave out (Draft & Verify / SWIFT's skip-set search),
//! chosen for predicted decode speed on calibration prompts.
//!
//! - **Acceptance** of a set: teacher-forced agreement on dense continuations of calibration
//!   prompts — the continuation runs through the model in one pass with the set's blocks left
//!   out (its positions attend to the exact prompt cache and to each other's inexact entries,
//!   as a round's drafts do), and each position's argmax is compared with the full model's in
//!   the same pass shape (so leaving nothing out agrees 100% by construction).
//! - **Costs**, measured once in the same run: a pass of r rows against one ([`verify_passes`])
//!   and the share of a one-row step each block takes (a step with all but one block left out
//!   against a full one).
//! - **Objective**: with acceptance α per draft, k drafts per round settle 1 + α + … + αᵏ
//!   tokens for k draft passes plus one verification pass of k + 1 rows; the predicted speed is
//!   the best over k of tokens per round over the round's cost in one-row steps.
//! - **Search**: greedy forward selection — each size adds the block whose addition predicts
//!   the most speed — stopping after `patience` sizes without a new best. Deterministic, and
//!   about `blocks × sizes` passes over the calibration set.

use super::bench_decode::{time_passes, verify_costs_from, verify_passes};
use crate::engine::block_set::BlockSet;
use crate::engine::model::Outputs;
use crate::engine::sampling::argmax;
use crate::engine::skip_draft::LeaveOut;
use crate::engine::{DecoderModel, KvCache};
use crate::hook::LayerHook;
use anyhow::{bail, ensure, Result};
use serde::Serialize;

/// Measured prices, in one-row full-model steps.
#[derive(Debug, Clone, Serialize)]
pub struct CostModel {
    /// Share of a one-row step one block takes.
    pub block_share: f64,
    /// A verification pass of `r` rows against one row, at index `r − 1`.
    pub verify: Vec<f64>,
}

impl CostModel {
    /// Times passes of 1..=`max_rows` rows after `prompt` and a one-row step with every block
    /// but the first left out, `repeats` times each, taking turns on one prefilled cache
    /// (medians). A block's share of a step is what the left-out blocks saved, per block.
    pub fn measure(
        model: &DecoderModel,
        prompt: &[u32],
        max_rows: usize,
        repeats: usize,
    ) -> Result<Self> {
        let n = model.num_layers();
        ensure!(
            n >= 2,
            "a skip-layer draft needs a model of at least 2 blocks"
        );
        let mut passes = verify_passes(model, prompt, max_rows.max(1))?;
        let mut leave_out = LeaveOut::new(&BlockSet::from_indices(1..n)?);
        let last = prompt[prompt.len() - 1];
        passes.push(Box::new(move |cache: &mut KvCache| {
            model.forward(&[last], cache, Some(&mut leave_out), Outputs::LastToken)?;
            Ok(())
        }));
        let mut seconds = time_passes(model, prompt, repeats, &mut passes)?;
        let one_block = seconds.pop().expect("the leave-out pass was pushed last");
        let verify = verify_costs_from(&seconds);
        let full = verify[0].seconds;
        Ok(Self {
            block_share: ((full - one_block) / full / (n - 1) as f64).clamp(0.0, 1.0),
            verify: verify.iter().map(|c| c.vs_one_row).collect(),
        })
    }

    /// A draft pass with `skipped` blocks left out, in steps.
    pub fn draft_cost(&self, skipped: usize) -> f64 {
        (1.0 - skipped as f64 * self.block_share).max(0.0)
    }

    /// `skip` with its measured `agreement`, priced: draft cost, best drafts per round and the
    /// speed they predict.
    pub fn candidate(&self, skip: &BlockSet, agreement: f64) -> SkipCandidate {
        let (drafts, speedup) = self.best_round(agreement, skip.len());
        SkipCandidate {
            skip: *skip,
            agreement,
            draft_cost: self.draft_cost(skip.len()),
            drafts,
            speedup,
        }
    }

    /// (drafts per round, predicted speed against dense) for per-draft acceptance `alpha`,
    /// the best over 1..=`verify.len() − 1` drafts.
    pub fn best_round(&self, alpha: f64, skipped: usize) -> (usize, f64) {
        let draft = self.draft_cost(skipped);
        let mut best = (0, 0.0);
        let (mut tokens, mut chance) = (1.0, 1.0);
        for k in 1..self.verify.len() {
            chance *= alpha;
            tokens += chance;
            let speed = tokens / (k as f64 * draft + self.verify[k]);
            if speed > best.1 {
                best = (k, speed);
            }
        }
        best
    }
}

/// Calibration prompts with their dense continuations, prefilled once.
pub struct Calibration {
    /// Per prompt: its prefilled cache, the continuation fed (all but its last token) and the
    /// full model's argmax after each fed token.
    items: Vec<(KvCache, Vec<u32>, Vec<u32>)>,
}

impl Calibration {
    /// `pairs`: (prompt, dense continuation of at least 2 tokens).
    pub fn new(model: &DecoderModel, pairs: &[(Vec<u32>, Vec<u32>)]) -> Result<Self> {
        let mut items = Vec::new();
        for (i, (prompt, continuation)) in pairs.iter().enumerate() {
            if continuation.len() < 2 {
                bail!("calibration prompt {i}: its continuation has under 2 tokens");
            }
            let mut cache = model.new_cache();
            model.forward(prompt, &mut cache, None, Outputs::LastToken)?;
            let fed = continuation[..continuation.len() - 1].to_vec();
            let reference = argmaxes(model, &mut cache, &fed, None)?;
            items.push((cache, fed, reference));
        }
        ensure!(!items.is_empty(), "no calibration prompts");
        Ok(Self { items })
    }

    /// Positions scored.
    pub fn positions(&self) -> usize {
        self.items.iter().map(|i| i.1.len()).sum()
    }

    /// Share of positions where the model with `skip` left out picks the full model's token.
    pub fn agreement(&mut self, model: &DecoderModel, skip: &BlockSet) -> Result<f64> {
        skip.check_fits(model.num_layers())?;
        let mut hook = LeaveOut::new(skip);
        let (mut same, mut total) = (0, 0);
        for (cache, fed, reference) in &mut self.items {
            let got = argmaxes(model, cache, fed, Some(&mut hook))?;
            same += got
                .iter()
                .zip(reference.iter())
                .filter(|(a, b)| a == b)
                .count();
            total += reference.len();
        }
        Ok(same as f64 / total as f64)
    }
}

/// Argmax after each of `tokens` fed in one pass; `cache` is rolled back afterwards.
fn argmaxes(
    model: &DecoderModel,
    cache: &mut KvCache,
    tokens: &[u32],
    hook: Option<&mut dyn LayerHook>,
) -> Result<Vec<u32>> {
    let start = cache.seq_len();
    let logits = model
        .forward(tokens, cache, hook, Outputs::AllTokens)?
        .logits
        .to_vec2::<f32>()?;
    cache.truncate(start);
    Ok(logits.iter().map(|row| argmax(row)).collect())
}

/// One evaluated skip set.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SkipCandidate {
    pub skip: BlockSet,
    /// Teacher-forced agreement with the full model.
    pub agreement: f64,
    /// A draft pass, in one-row steps.
    pub draft_cost: f64,
    /// Drafts per round that predict the most speed.
    pub drafts: usize,
    /// Predicted decode speed against dense.
    pub speedup: f64,
}

/// Greedy forward selection over blocks `0..num_layers`: at each size, the best set one block
/// larger than the last size's best. Returns the best set of each size tried (the first is the
/// empty set); stops at `max_skipped` blocks or after `patience` sizes without a new best.
pub fn greedy_search(
    num_layers: usize,
    max_skipped: usize,
    patience: usize,
    mut evaluate: impl FnMut(&BlockSet) -> Result<SkipCandidate>,
) -> Result<Vec<SkipCandidate>> {
    let mut path = vec![evaluate(&BlockSet::new())?];
    let mut best = path[0].speedup;
    let mut stale = 0;
    let most = max_skipped.min(num_layers.saturating_sub(1));
    while path.len() <= most && stale < patience.max(1) {
        let base = path[path.len() - 1].skip;
        let mut round: Option<SkipCandidate> = None;
        for block in (0..num_layers).filter(|&b| !base.contains(b)) {
            let mut skip = base;
            skip.insert(block);
            let c = evaluate(&skip)?;
            if round.is_none_or(|r| c.speedup > r.speedup) {
                round = Some(c);
            }
        }
        let Some(round) = round else { break };
        if round.speedup > best {
            best = round.speedup;
            stale = 0;
        } else {
            stale += 1;
        }
        path.push(round);
    }
    Ok(path)
}

/// The search on a model: agreement on `calibration`, prices from `costs`.
pub fn search(
    model: &DecoderModel,
    calibration: &mut Calibration,
    costs: &CostModel,
    max_skipped: usize,
    patience: usize,
) -> Result<Vec<SkipCandidate>> {
    greedy_search(model.num_layers(), max_skipped, patience, |skip| {
        Ok(costs.candidate(skip, calibration.agreement(model, skip)?))
    })
}

/// Up to `n` candidates of a search path that leave something out, best predicted first.
pub fn leaders(path: &[SkipCandidate], n: usize) -> Vec<SkipCandidate> {
    let mut sets: Vec<SkipCandidate> = path
        .iter()
        .filter(|c| !c.skip.is_empty())
        .copied()
        .collect();
    sets.sort_by(|a, b| b.speedup.total_cmp(&a.speedup));
    sets.truncate(n);
    sets
}

/// The search path as a Markdown table.
pub fn path_table(path: &[SkipCandidate]) -> String {
    let mut out = String::from(
        "| blocks left out | agreement with the full model | draft pass (steps) | drafts per round | predicted speed vs dense |\n|---|---|---|---|---|\n",
    );
    for c in path {
        let skip = match c.skip.is_empty() {
            true => "none".to_string(),
            false => c.skip.to_string(),
        };
        out.push_str(&format!(
            "| {skip} | {:.1}% | {:.2} | {} | {:.2}× |\n",
            100.0 * c.agreement,
            c.draft_cost,
            c.drafts,
            c.speedup
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::generate::{generate_dense, GenerationParams};
    use crate::engine::synthetic::SyntheticSpec;
    use candle_core::DType;

    fn costs(block_share: f64) -> CostModel {
        CostModel {
            block_share,
            verify: vec![1.0, 1.25, 1.5, 1.75, 2.0],
        }
    }

    #[test]
    fn the_objective_prices_drafts_and_verification() {
        let c = costs(0.03);
        // Perfect, free drafts: the widest round wins (5 tokens for a 2-step pass).
        assert_eq!(c.best_round(1.0, 40), (4, 2.5));
        // Drafts that are never right lose whatever they cost: one draft, 1 token per round.
        let (k, speed) = c.best_round(0.0, 10);
        assert_eq!(k, 1);
        assert!((speed - 1.0 / (0.7 + 1.25)).abs() < 1e-12, "{speed}");
        assert!((c.draft_cost(10) - 0.7).abs() < 1e-12);
        assert_eq!(c.draft_cost(40), 0.0);
    }

    #[test]
    fn greedy_search_finds_the_blocks_that_cost_no_agreement() {
        // Blocks 2, 5 and 7 are redundant (leaving each out costs 1% agreement); any other
        // block ruins the draft.
        let good = [2, 5, 7];
        let c = costs(0.1);
        let mut evaluated = 0;
        let path = greedy_search(10, 6, 2, |skip| {
            evaluated += 1;
            let bad = skip.indices().any(|b| !good.contains(&b));
            let agreement = if bad {
                0.1
            } else {
                1.0 - 0.01 * skip.len() as f64
            };
            Ok(c.candidate(skip, agreement))
        })
        .unwrap();
        let found = leaders(&path, 2);
        assert_eq!(found[0].skip.indices().collect::<Vec<_>>(), good);
        assert!(found[0].speedup > found[1].speedup);
        // Each size extends the last; two sizes past the best without gain end the search.
        for pair in path.windows(2) {
            assert_eq!(pair[1].skip.len(), pair[0].skip.len() + 1);
            assert!(pair[0].skip.indices().all(|b| pair[1].skip.contains(b)));
        }
        assert_eq!(path.len(), 6, "sizes 0..=5");
        assert_eq!(evaluated, 1 + 10 + 9 + 8 + 7 + 6);
    }

    #[test]
    fn leaving_nothing_out_agrees_fully_and_leaving_blocks_out_does_not() {
        let model = SyntheticSpec::tiny(4).build(DType::F32).unwrap();
        let params = GenerationParams::greedy(12);
        let pairs: Vec<(Vec<u32>, Vec<u32>)> = [vec![5, 6, 7, 8], vec![40, 41, 9]]
            .into_iter()
            .map(|p| {
                let g = generate_dense(&model, &p, &params, |_| Ok(())).unwrap();
                (p, g.tokens)
            })
            .collect();
        let mut calibration = Calibration::new(&model, &pairs).unwrap();
        assert_eq!(calibration.positions(), 22);
        assert_eq!(
            calibration.agreement(&model, &BlockSet::new()).unwrap(),
            1.0
        );
        let most = BlockSet::from_indices([1, 2, 3]).unwrap();
        assert!(calibration.agreement(&model, &most).unwrap() < 1.0);
        // Evaluating sets leaves the prefilled caches as they were.
        assert_eq!(
            calibration.agreement(&model, &BlockSet::new()).unwrap(),
            1.0
        );
        let e = calibration
            .agreement(&model, &BlockSet::from_indices([4]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("block 5"), "{e}");
        let costs = CostModel::measure(&model, &[5, 6, 7, 8], 3, 3).unwrap();
        assert_eq!(costs.verify.len(), 3);
        assert!((0.0..=1.0).contains(&costs.block_share));
        let path = search(&model, &mut calibration, &costs, 2, 1).unwrap();
        assert!(path[0].skip.is_empty() && path[0].agreement == 1.0);
        assert!(path.len() >= 2 && path.iter().all(|c| c.skip.len() <= 2));
        assert!(path_table(&path).contains("| none | 100.0% |"));
    }
}
