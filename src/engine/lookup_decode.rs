//! Speculative decoding with token drafts — prompt lookup ([`super::ngram_draft`]) or passes
//! with blocks left out ([`super::skip_draft`]): the full model verifies the next token and up
//! to `k` drafts in one pass (the quantized matmuls read each
//! weight once for all rows), keeps the agreeing prefix plus one token of its own, and truncates
//! the cache back past the rejected drafts. Greedy output is dense's token for token; sampled
//! output follows dense's distribution (a draft is a one-point proposal in
//! [`accept_or_resample`]).
//!
//! In `auto` mode a [`DraftController`] decides each round what to draft from what this request
//! has measured (prompt lookup, skip-layer passes when a skip set is given, or nothing).

use super::draft_controller::{DraftController, Drafted, RoundPlan};
use super::generate::{FinishReason, GenerationParams};
use super::model::{DecoderModel, Outputs};
use super::modes::AdaptiveGeneration;
use super::ngram_draft::propose;
use super::skip_draft::SkipDrafter;
use super::speculative::{
    accept_or_resample, start_speculative, DraftSettings, DraftSource, SpeculativeStart, Verdict,
};
use anyhow::{bail, Result};
use std::time::Instant;

/// Generate losslessly with token drafts — prompt lookup ([`DraftSource::PromptLookup`],
/// [`DraftSource::Auto`]) or skip-layer passes ([`DraftSource::SkipLayers`]) — each round's
/// drafts verified by the full model in one pass. `on_token` sees each token as it is settled
/// (with depth `num_layers`: every token is the full model's).
pub fn generate_token_drafts(
    model: &DecoderModel,
    prompt: &[u32],
    params: &GenerationParams,
    draft: &DraftSettings,
    mut on_token: impl FnMut(u32, usize) -> Result<()>,
) -> Result<AdaptiveGeneration> {
    let auto = draft.source == DraftSource::Auto;
    let mut controller = DraftController::new(auto, draft.tokens, draft.ngram);
    let mut skipper = match draft.source {
        DraftSource::Layers => bail!("internal: layer drafts go through generate_self_speculative"),
        DraftSource::SkipLayers => Some(SkipDrafter::new(model, draft)?),
        // Auto weighs skip-layer drafts too when a skip set is given.
        DraftSource::Auto if !draft.skip.is_empty() => {
            controller = controller.with_skip_drafts();
            Some(SkipDrafter::new(model, draft)?)
        }
        DraftSource::PromptLookup | DraftSource::Auto => None,
    };
    let SpeculativeStart {
        mut sampler,
        mut cache,
        mut out,
        first: mut next,
        decode_start,
    } = start_speculative(model, prompt, params, draft)?;
    let n = model.num_layers();
    // The context drafts are looked up in: the prompt and every settled token.
    let mut history = prompt.to_vec();
    let mut settled = vec![next];
    'generation: loop {
        for &t in &settled {
            if params.stop_tokens.contains(&t) {
                out.generation.finish_reason = FinishReason::Stop;
                break 'generation;
            }
            out.generation.tokens.push(t);
            out.depths.push(n);
            history.push(t);
            on_token(t, n)?;
        }
        let produced = out.generation.tokens.len();
        if produced >= params.max_tokens {
            break;
        }
        // `next` is settled but not yet in the cache; drafts continue from it. Leave room for
        // the token of its own every round adds.
        let budget = draft.tokens.min(params.max_tokens - produced - 1);
        let offered = match draft.source {
            DraftSource::SkipLayers => None,
            _ => propose(&history, draft.ngram, budget),
        };
        let plan = match draft.source {
            DraftSource::SkipLayers => RoundPlan::Skip(budget),
            _ => {
                let (len, ngram) = offered
                    .as_ref()
                    .map_or((0, 0), |d| (d.tokens.len(), d.ngram));
                // Skip drafts are weighed only by a controller given a skip set.
                controller.plan(len, ngram, budget)
            }
        };
        let (drafts, drafted) = match (plan, offered, skipper.as_mut()) {
            (RoundPlan::Lookup(j), Some(d), _) => {
                (d.tokens[..j].to_vec(), Drafted::Lookup { ngram: d.ngram })
            }
            (RoundPlan::Skip(k), _, Some(skip)) => {
                let start = Instant::now();
                let drafts = skip.draft(model, &mut cache, next, k, &params.stop_tokens)?;
                out.draft_blocks += drafts.len() * skip.blocks_run;
                let per_draft = start.elapsed().as_secs_f64() / drafts.len().max(1) as f64;
                (
                    drafts,
                    Drafted::Skip {
                        seconds_per_draft: per_draft,
                    },
                )
            }
            _ => (Vec::new(), Drafted::Lookup { ngram: 0 }),
        };
        let round_start = cache.seq_len();
        let mut rows = Vec::with_capacity(drafts.len() + 1);
        rows.push(next);
        rows.extend_from_slice(&drafts);
        let pass_start = Instant::now();
        let outputs = match drafts.is_empty() {
            true => Outputs::LastToken,
            false => Outputs::AllTokens,
        };
        let logits = model
            .forward(&rows, &mut cache, None, outputs)?
            .logits
            .to_vec2::<f32>()?;
        settled.clear();
        let mut correction = None;
        for (i, &d) in drafts.iter().enumerate() {
            // Both sources propose one token, not a distribution: a one-point proposal.
            let p = sampler.distribution(&logits[i]);
            match accept_or_resample(&p, &[(d, 1.0)], d, &mut sampler) {
                Verdict::Accept => settled.push(d),
                Verdict::Replace(t) => {
                    correction = Some(t);
                    break;
                }
            }
        }
        let kept = settled.len();
        next = match correction {
            Some(t) => t,
            None => sampler.sample(&logits[kept]),
        };
        settled.push(next);
        controller.record(
            rows.len(),
            pass_start.elapsed().as_secs_f64(),
            drafts.len(),
            kept,
            drafted,
        );
        if let (Drafted::Skip { .. }, Some(skip)) = (drafted, skipper.as_mut()) {
            skip.bar.update(drafts.len(), kept);
        }
        // Every pass is a round (a plain step is a round with no drafts): tokens per round is
        // then tokens per full-model pass.
        out.rounds += 1;
        out.drafted += drafts.len();
        out.accepted += kept;
        // Keep `next`'s predecessor and the kept drafts; forget the rejected ones.
        cache.truncate(round_start + 1 + kept);
    }
    out.generation.decode_seconds = decode_start.elapsed().as_secs_f64();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::generate::generate_dense;
    use crate::engine::sampling::SamplingParams;
    use crate::engine::speculative::DraftSource;
    use crate::engine::synthetic::SyntheticSpec;
    use candle_core::DType;

    /// Prompts that repeat themselves, so lookup drafts something from the first step.
    const PROMPTS: [&[u32]; 4] = [
        &[49, 26, 258, 49, 26, 258, 49, 26],
        &[5, 6, 7, 8, 5, 6],
        &[1000, 2000, 3000, 17, 17, 17],
        &[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5],
    ];

    fn lookup(source: DraftSource, tokens: usize, ngram: usize) -> DraftSettings {
        DraftSettings {
            source,
            tokens,
            ngram,
            ..DraftSettings::fixed(tokens)
        }
    }

    fn skipping(blocks: &str, tokens: usize, confidence: f32, target: f32) -> DraftSettings {
        DraftSettings {
            source: DraftSource::SkipLayers,
            skip: blocks.parse().unwrap(),
            min_confidence: confidence,
            target_acceptance: target,
            ..DraftSettings::fixed(tokens)
        }
    }

    #[test]
    fn greedy_token_drafts_equal_dense_through_accepts_and_rollbacks() {
        let model = SyntheticSpec::tiny(4).build(DType::F32).unwrap();
        let params = GenerationParams::greedy(40);
        let settings = [
            lookup(DraftSource::PromptLookup, 1, 1),
            lookup(DraftSource::PromptLookup, 4, 3),
            lookup(DraftSource::PromptLookup, 12, 2),
            lookup(DraftSource::Auto, 7, 3),
            // Skip-layer drafts write inexact K/V at drafted positions: any left behind
            // would show in the text.
            skipping("2", 3, 0.0, 0.0),
            skipping("1+3", 5, 0.0, 0.0),
            skipping("4", 4, 0.2, 0.6),
            // Auto weighing lookup against skip-layer drafts.
            DraftSettings {
                source: DraftSource::Auto,
                ..skipping("3", 5, 0.0, 0.0)
            },
        ];
        let (mut accepted, mut rejected) = (0, 0);
        let mut skip_drafted = 0;
        for prompt in PROMPTS {
            let dense = generate_dense(&model, prompt, &params, |_| Ok(())).unwrap();
            for draft in &settings {
                let (source, k, n) = (draft.source, draft.tokens, draft.ngram);
                let mut streamed = Vec::new();
                let g = generate_token_drafts(&model, prompt, &params, draft, |t, depth| {
                    assert_eq!(depth, 4);
                    streamed.push(t);
                    Ok(())
                })
                .unwrap();
                // Every later token attends over the cache the rollbacks left: one wrong
                // entry and the text would drift from dense.
                assert_eq!(
                    g.generation.tokens, dense.tokens,
                    "{source:?} k {k} n {n} {prompt:?}"
                );
                assert_eq!(streamed, dense.tokens);
                assert!(g.accepted <= g.drafted);
                accepted += g.accepted;
                rejected += g.drafted - g.accepted;
                if source == DraftSource::SkipLayers {
                    skip_drafted += g.drafted;
                    assert_eq!(g.draft_blocks, g.drafted * (4 - draft.skip.len()));
                }
            }
        }
        assert!(
            accepted > 0 && rejected > 0,
            "accepted {accepted}, rejected {rejected}"
        );
        assert!(skip_drafted > 0);
    }

    #[test]
    fn skip_drafts_need_blocks_the_model_has() {
        let model = SyntheticSpec::tiny(3).build(DType::F32).unwrap();
        let params = GenerationParams::greedy(4);
        let refusal = |blocks: &str| {
            let draft = skipping(blocks, 3, 0.0, 0.0);
            let e = generate_token_drafts(&model, PROMPTS[0], &params, &draft, |_, _| Ok(()));
            format!("{:#}", e.unwrap_err())
        };
        let none = refusal("");
        assert!(
            none.contains("skip_layers") && none.contains("--draft-skip"),
            "{none}"
        );
        let far = refusal("2+4");
        assert!(far.contains("skip") && far.contains("block 4"), "{far}");
        let all = refusal("1+2+3");
        assert!(all.contains("nothing to draft"), "{all}");
    }

    #[test]
    fn stop_tokens_and_max_tokens_end_lookup_where_they_end_dense() {
        let model = SyntheticSpec::tiny(3).build(DType::F32).unwrap();
        let prompt = PROMPTS[0];
        let free = GenerationParams::greedy(30);
        let dense = generate_dense(&model, prompt, &free, |_| Ok(())).unwrap();
        for max_tokens in [1, 2, 5, 30] {
            for stop in [Vec::new(), vec![dense.tokens[3]]] {
                let p = GenerationParams {
                    max_tokens,
                    stop_tokens: stop,
                    ..free.clone()
                };
                let want = generate_dense(&model, prompt, &p, |_| Ok(())).unwrap();
                let got = generate_token_drafts(
                    &model,
                    prompt,
                    &p,
                    &lookup(DraftSource::PromptLookup, 8, 3),
                    |_, _| Ok(()),
                )
                .unwrap();
                assert_eq!(got.generation.tokens, want.tokens, "max {max_tokens}");
                assert_eq!(got.generation.finish_reason, want.finish_reason);
            }
        }
    }

    #[test]
    fn sampled_token_drafts_are_reproducible_from_their_seed() {
        let model = SyntheticSpec::tiny(3).build(DType::F32).unwrap();
        let params = GenerationParams {
            max_tokens: 24,
            sampling: SamplingParams {
                temperature: 0.8,
                // A narrow choice, so sampled tokens recur and lookup finds drafts.
                top_k: 3,
                seed: 11,
                ..SamplingParams::greedy()
            },
            stop_tokens: Vec::new(),
        };
        for settings in [
            lookup(DraftSource::PromptLookup, 4, 3),
            skipping("2", 3, 0.0, 0.0),
        ] {
            let run = || {
                generate_token_drafts(&model, PROMPTS[1], &params, &settings, |_, _| Ok(()))
                    .unwrap()
            };
            let (a, b) = (run(), run());
            assert_eq!(a.generation.tokens, b.generation.tokens);
            assert_eq!(a.generation.tokens.len(), 24);
            assert!(a.drafted > 0);
        }
    }
}
