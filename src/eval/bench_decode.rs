//! Decode benchmark of the generation modes: tokens/s against dense measured in one run,
//! agreement with dense for the lossy modes, and acceptance / draft depth for speculation.
//!
//! Modes run interleaved prompt by prompt, so load on a shared machine hits them alike.

use crate::engine::generate::GenerationParams;
use crate::engine::kv_fill::KvFill;
use crate::engine::model::Outputs;
use crate::engine::modes::{generate_mode, AdaptiveGeneration, Mode, ModeSpec};
use crate::engine::speculative::DraftSettings;
use crate::engine::{DecoderModel, KvCache};
use crate::hook::LayerHook;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::time::Instant;

/// Parse `dense,early_exit/propagate,self_speculative/k=6/c=0.3,self_speculative/auto/k=7,
/// self_speculative/skip_layers/k=3/s=10+15+20` (a draft source: layers, prompt_lookup, auto,
/// skip_layers with `s=` the blocks left out, counted from 1; unwritten settings come
/// from `kv_fill` and `draft`); `all` = dense, early exit with each fill, self-speculative.
pub fn parse_modes(list: &str, kv_fill: KvFill, draft: DraftSettings) -> Result<Vec<ModeSpec>> {
    let base = ModeSpec {
        kv_fill,
        draft,
        ..ModeSpec::dense()
    };
    if list.trim() == "all" {
        let mut all = vec![base];
        for fill in KvFill::ALL {
            all.push(ModeSpec {
                mode: Mode::EarlyExit,
                kv_fill: fill,
                ..base
            });
        }
        all.push(ModeSpec {
            mode: Mode::SelfSpeculative,
            ..base
        });
        return Ok(all);
    }
    list.split(',')
        .map(|item| {
            let item = item.trim();
            let mut parts = item.split('/');
            let mut spec = ModeSpec {
                mode: parts.next().unwrap_or_default().parse()?,
                ..base
            };
            for detail in parts {
                match (spec.mode, detail.split_once('=')) {
                    (Mode::EarlyExit, None) => spec.kv_fill = detail.parse()?,
                    (Mode::SelfSpeculative, None) => {
                        spec.draft.source =
                            detail.parse().with_context(|| format!("mode {item:?}"))?
                    }
                    (Mode::SelfSpeculative, Some(("k", k))) => {
                        spec.draft.tokens =
                            k.parse().ok().filter(|&k| k > 0).with_context(|| {
                                format!("mode {item:?}: k must be a whole number >= 1, got {k:?}")
                            })?
                    }
                    (Mode::SelfSpeculative, Some(("c", c))) => {
                        spec.draft.min_confidence = c
                            .parse()
                            .ok()
                            .filter(|c| (0.0..=1.0).contains(c))
                            .with_context(|| {
                                format!("mode {item:?}: c must be a number in [0, 1], got {c:?}")
                            })?
                    }
                    (Mode::SelfSpeculative, Some(("a", a))) => {
                        spec.draft.target_acceptance = a
                            .parse()
                            .ok()
                            .filter(|a| (0.0..1.0).contains(a))
                            .with_context(|| {
                                format!("mode {item:?}: a must be a number in [0, 1), got {a:?}")
                            })?
                    }
                    (Mode::SelfSpeculative, Some(("s", blocks))) => {
                        spec.draft.skip =
                            blocks.parse().with_context(|| format!("mode {item:?}"))?
                    }
                    (Mode::SelfSpeculative, Some(("v", v))) => {
                        spec.draft.vocab = v.parse().with_context(|| {
                            format!("mode {item:?}: v must be a whole number, got {v:?}")
                        })?
                    }
                    _ => bail!(
                        "mode {item:?}: unknown setting {detail:?} (early_exit/FILL, \
                         self_speculative[/SOURCE]/k=N/c=X/a=X/v=N/s=B+B+B; dense takes none)"
                    ),
                }
            }
            Ok(spec)
        })
        .collect()
}

/// One mode's totals over all prompts.
#[derive(Debug, Clone, Serialize)]
pub struct ModeReport {
    pub mode: String,
    pub prompts: usize,
    /// Tokens generated after the first (the prompt pass makes the first).
    pub decode_tokens: usize,
    pub decode_seconds: f64,
    pub decode_tokens_per_second: f64,
    /// Decode tokens/s over dense's, both from this run.
    pub speedup_vs_dense: f64,
    /// Share of positions whose token equals dense's (over the longer of the two outputs).
    pub agreement_with_dense: f64,
    /// Prompts whose whole output equals dense's.
    pub identical_outputs: usize,
    /// Mean blocks run by the pass that chose each token.
    pub mean_depth: f64,
    /// Self-speculative only.
    pub acceptance_rate: Option<f64>,
    pub mean_draft_depth: Option<f64>,
    pub tokens_per_round: Option<f64>,
    /// Share of decode time spent in the hook (probes + policy).
    pub probe_share: f64,
}

#[derive(Default)]
struct Totals {
    decode_tokens: usize,
    decode_seconds: f64,
    matches: usize,
    positions: usize,
    identical: usize,
    depth_sum: usize,
    depth_count: usize,
    drafted: usize,
    accepted: usize,
    draft_blocks: usize,
    rounds: usize,
    settled_in_rounds: usize,
    hook_seconds: f64,
}

impl Totals {
    fn add(&mut self, g: &AdaptiveGeneration, dense: &[u32]) {
        let tokens = &g.generation.tokens;
        self.decode_tokens += tokens.len().saturating_sub(1);
        self.decode_seconds += g.generation.decode_seconds;
        self.matches += tokens.iter().zip(dense).filter(|(a, b)| a == b).count();
        self.positions += tokens.len().max(dense.len());
        self.identical += usize::from(tokens == dense);
        self.depth_sum += g.depths.iter().sum::<usize>();
        self.depth_count += g.depths.len();
        self.drafted += g.drafted;
        self.accepted += g.accepted;
        self.draft_blocks += g.draft_blocks;
        self.rounds += g.rounds;
        self.settled_in_rounds += tokens.len().saturating_sub(1);
        self.hook_seconds += g.decode_hook_seconds;
    }
}

/// `a / b`, 0 when `b` is 0 (an empty run).
pub(crate) fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// Every mode's report, and dense's answers (the reference the others are compared with).
pub struct DecodeBench {
    pub reports: Vec<ModeReport>,
    pub dense_answers: Vec<Vec<u32>>,
}

/// Generate every prompt in every mode (dense first, as the reference) and report each mode.
/// `hook` is the exit policy of early-exit modes and the draft policy of speculation.
pub fn bench_decode(
    model: &DecoderModel,
    prompts: &[Vec<u32>],
    params: &GenerationParams,
    modes: &[ModeSpec],
    mut hook: Option<&mut dyn LayerHook>,
) -> Result<DecodeBench> {
    if prompts.is_empty() {
        bail!("bench-decode needs at least one prompt");
    }
    let mut all = vec![ModeSpec::dense()];
    all.extend(modes.iter().filter(|m| m.mode != Mode::Dense));
    // Warm-up: first-touch allocations and page faults are nobody's cost.
    generate_mode(model, &prompts[0], params, &all[0], None, |_, _| Ok(()))?;
    let mut totals: Vec<Totals> = all.iter().map(|_| Totals::default()).collect();
    let mut dense_answers = Vec::with_capacity(prompts.len());
    for prompt in prompts {
        let mut dense = Vec::new();
        for (spec, total) in all.iter().zip(&mut totals) {
            let hook = hook.as_mut().map(|h| &mut **h as &mut dyn LayerHook);
            let g = generate_mode(model, prompt, params, spec, hook, |_, _| Ok(()))
                .with_context(|| format!("mode {}", spec.label()))?;
            if spec.mode == Mode::Dense {
                dense = g.generation.tokens.clone();
            }
            total.add(&g, &dense);
        }
        dense_answers.push(dense);
    }
    let dense_speed = ratio(totals[0].decode_tokens as f64, totals[0].decode_seconds);
    let reports = all
        .iter()
        .zip(&totals)
        .map(|(spec, t)| {
            let speed = ratio(t.decode_tokens as f64, t.decode_seconds);
            let speculative = spec.mode == Mode::SelfSpeculative;
            ModeReport {
                mode: spec.label(),
                prompts: prompts.len(),
                decode_tokens: t.decode_tokens,
                decode_seconds: t.decode_seconds,
                decode_tokens_per_second: speed,
                speedup_vs_dense: ratio(speed, dense_speed),
                agreement_with_dense: ratio(t.matches as f64, t.positions as f64),
                identical_outputs: t.identical,
                mean_depth: ratio(t.depth_sum as f64, t.depth_count as f64),
                acceptance_rate: speculative.then(|| ratio(t.accepted as f64, t.drafted as f64)),
                mean_draft_depth: speculative
                    .then(|| ratio(t.draft_blocks as f64, t.drafted as f64)),
                tokens_per_round: speculative
                    .then(|| ratio(t.settled_in_rounds as f64, t.rounds as f64)),
                probe_share: ratio(t.hook_seconds, t.decode_seconds),
            }
        })
        .collect();
    Ok(DecodeBench {
        reports,
        dense_answers,
    })
}

/// What one full-model pass over `rows` positions costs after a prompt, against one row.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyCost {
    pub rows: usize,
    /// Median seconds of the pass (logits of every row included, as verification needs).
    pub seconds: f64,
    pub vs_one_row: f64,
}

/// A pass to time on a prefilled cache (it may append to the cache; the timer rolls it back).
pub type TimedPass<'a> = Box<dyn FnMut(&mut KvCache) -> Result<()> + 'a>;

/// Prefill `prompt` once, then time each of `passes` `repeats` times: the median seconds of
/// each. The passes take turns (1st, 2nd, …, 1st, 2nd, …) so a machine that slows down or speeds
/// up mid-run moves them alike instead of skewing their ratios; the cache goes back to the
/// prompt after every pass.
pub fn time_passes(
    model: &DecoderModel,
    prompt: &[u32],
    repeats: usize,
    passes: &mut [TimedPass<'_>],
) -> Result<Vec<f64>> {
    let mut cache = model.new_cache();
    model.forward(prompt, &mut cache, None, Outputs::LastToken)?;
    let start = cache.seq_len();
    let mut times = vec![Vec::with_capacity(repeats.max(1)); passes.len()];
    for _ in 0..repeats.max(1) {
        for (pass, samples) in passes.iter_mut().zip(&mut times) {
            let t = Instant::now();
            pass(&mut cache)?;
            samples.push(t.elapsed().as_secs_f64());
            cache.truncate(start);
        }
    }
    Ok(times
        .iter_mut()
        .map(|samples| {
            samples.sort_by(f64::total_cmp);
            samples[samples.len() / 2]
        })
        .collect())
}

/// Full-model passes of 1..=`max_rows` rows (the prompt's last tokens again) with every row's
/// logits, as verifying `rows − 1` drafts needs; for [`time_passes`] on `prompt`.
pub fn verify_passes<'a>(
    model: &'a DecoderModel,
    prompt: &'a [u32],
    max_rows: usize,
) -> Result<Vec<TimedPass<'a>>> {
    if prompt.len() < max_rows {
        bail!("the prompt needs at least {max_rows} tokens to time {max_rows} rows");
    }
    Ok((1..=max_rows)
        .map(|rows| -> TimedPass<'a> {
            let tokens = &prompt[prompt.len() - rows..];
            Box::new(move |cache: &mut KvCache| {
                let pass = model.forward(tokens, cache, None, Outputs::AllTokens)?;
                pass.logits.to_vec2::<f32>()?;
                Ok(())
            })
        })
        .collect())
}

/// [`VerifyCost`]s from the median seconds of passes of 1, 2, … rows.
pub fn verify_costs_from(seconds: &[f64]) -> Vec<VerifyCost> {
    seconds
        .iter()
        .enumerate()
        .map(|(i, &s)| VerifyCost {
            rows: i + 1,
            seconds: s,
            vs_one_row: ratio(s, seconds[0]),
        })
        .collect()
}

/// Time passes of 1..=`max_rows` rows after `prompt` (each `repeats` times, median): the price
/// of verifying `rows − 1` drafts in one pass.
pub fn verify_costs(
    model: &DecoderModel,
    prompt: &[u32],
    max_rows: usize,
    repeats: usize,
) -> Result<Vec<VerifyCost>> {
    let mut passes = verify_passes(model, prompt, max_rows)?;
    let seconds = time_passes(model, prompt, repeats, &mut passes)?;
    Ok(verify_costs_from(&seconds))
}

/// Verification costs as a Markdown table.
pub fn verify_cost_table(costs: &[VerifyCost]) -> String {
    let mut out = String::from("| rows (drafts + 1) | ms | vs one row |\n|---|---|---|\n");
    for c in costs {
        out.push_str(&format!(
            "| {} | {:.2} | {:.2}× |\n",
            c.rows,
            1e3 * c.seconds,
            c.vs_one_row
        ));
    }
    out
}

/// The reports as a Markdown table.
pub fn markdown_table(reports: &[ModeReport]) -> String {
    let opt = |v: Option<f64>, digits: usize| v.map_or("–".into(), |v| format!("{v:.digits$}"));
    let mut out = String::from(
        "| mode | decode tok/s | vs dense | agreement with dense | identical outputs | mean depth | acceptance | draft depth | tokens/round | probe share |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        out.push_str(&format!(
            "| {} | {:.1} | {:.2}× | {:.1}% | {}/{} | {:.2} | {} | {} | {} | {:.1}% |\n",
            r.mode,
            r.decode_tokens_per_second,
            r.speedup_vs_dense,
            100.0 * r.agreement_with_dense,
            r.identical_outputs,
            r.prompts,
            r.mean_depth,
            r.acceptance_rate
                .map_or("–".into(), |a| format!("{:.1}%", 100.0 * a)),
            opt(r.mean_draft_depth, 2),
            opt(r.tokens_per_round, 2),
            100.0 * r.probe_share,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::early_exit::FixedExit;
    use crate::engine::synthetic::SyntheticSpec;
    use candle_core::DType;

    #[test]
    fn mode_lists_parse_with_settings_and_errors_name_the_item() {
        let d = DraftSettings::fixed(4);
        let modes = parse_modes(
            "dense, early_exit/propagate,self_speculative/k=6/c=0.25/a=0.6/v=512",
            KvFill::Recompute,
            d,
        )
        .unwrap();
        assert_eq!(modes.len(), 3);
        assert_eq!(modes[1].kv_fill, KvFill::Propagate);
        assert_eq!(modes[2].draft.tokens, 6);
        assert_eq!(modes[2].draft.min_confidence, 0.25);
        assert_eq!(modes[2].draft.target_acceptance, 0.6);
        assert_eq!(modes[2].draft.vocab, 512);
        assert_eq!(modes[2].label(), "self_speculative/k=6/c=0.25/a=0.6/v=512");
        assert_eq!(parse_modes("all", KvFill::Recompute, d).unwrap().len(), 5);
        let skip = parse_modes(
            "self_speculative/skip_layers/k=3/s=20+10/a=0.7",
            KvFill::Recompute,
            d,
        )
        .unwrap();
        assert_eq!(skip[0].draft.skip.to_string(), "10+20");
        assert_eq!(
            skip[0].label(),
            "self_speculative/skip_layers/k=3/s=10+20/a=0.7"
        );
        let auto = parse_modes("self_speculative/auto/k=6/s=7", KvFill::Recompute, d).unwrap();
        assert_eq!(auto[0].label(), "self_speculative/auto/k=6/s=7");
        for bad in [
            "self_speculative/skip_layers/s=0",
            "self_speculative/skip_layers/s=3+y",
            "self_speculative/6",
            "self_speculative/k=0",
            "self_speculative/c=2",
            "self_speculative/a=1",
            "self_speculative/v=x",
            "dense/k=3",
        ] {
            let e = parse_modes(bad, KvFill::Recompute, d)
                .unwrap_err()
                .to_string();
            assert!(e.contains(bad), "{e}");
        }
        assert!(parse_modes("early_exit/copy", KvFill::Recompute, d).is_err());
    }

    #[test]
    fn speculative_agrees_fully_and_exits_report_their_depth() {
        let model = SyntheticSpec::tiny(4).build(DType::F32).unwrap();
        let params = GenerationParams::greedy(10);
        let prompts = vec![vec![3, 4, 5], vec![100, 7]];
        let modes = parse_modes("all", KvFill::Recompute, DraftSettings::fixed(3)).unwrap();
        let mut hook = FixedExit::new(2, 4).unwrap();
        let bench = bench_decode(&model, &prompts, &params, &modes, Some(&mut hook)).unwrap();
        assert_eq!(bench.dense_answers.len(), 2);
        assert_eq!(bench.dense_answers[0].len(), 10);
        let reports = bench.reports;
        let by = |name: &str| reports.iter().find(|r| r.mode == name).unwrap();
        assert_eq!(by("dense").agreement_with_dense, 1.0);
        let spec = by("self_speculative/k=3");
        assert_eq!(spec.identical_outputs, 2);
        assert_eq!(spec.agreement_with_dense, 1.0);
        assert_eq!(spec.mean_draft_depth, Some(2.0));
        assert_eq!(by("early_exit/recompute").mean_depth, 2.0);
        assert_eq!(by("early_exit/recompute").decode_tokens, 18);
        assert!(markdown_table(&reports).contains("| early_exit/propagate |"));
    }
}
