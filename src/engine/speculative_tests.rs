//! Self-speculative decoding against dense decoding, on self-built tiny models.

use super::early_exit::FixedExit;
use super::generate::{generate_dense, FinishReason, GenerationParams};
use super::sampling::{Sampler, SamplingParams};
use super::speculative::{
    accept_or_resample, generate_self_speculative, ConfidenceBar, DraftSettings, Verdict,
};
use super::synthetic::SyntheticSpec;
use crate::hook::{Decision, LayerHook, LayerView, PassInfo, SkipPlan};
use anyhow::Result;
use candle_core::DType;

const PROMPTS: [&[u32]; 3] = [
    &[49, 26, 258, 3943, 293, 691, 303],
    &[5],
    &[1000, 2000, 3000, 17, 17, 17],
];

/// Exits at a depth that changes from pass to pass, so drafts of several depths wait together.
struct WanderingExit {
    pass: usize,
}

impl LayerHook for WanderingExit {
    fn name(&self) -> &str {
        "wandering"
    }
    fn begin_pass(&mut self, _: &PassInfo) -> Result<SkipPlan> {
        self.pass += 1;
        Ok(SkipPlan::none())
    }
    fn after_layer(&mut self, view: &mut LayerView<'_>) -> Result<Decision> {
        let depth = 1 + (self.pass * 7) % view.num_layers;
        Ok(if view.number() == depth {
            Decision::Exit
        } else {
            Decision::Continue
        })
    }
}

fn params(max_tokens: usize, sampling: SamplingParams, stop: Vec<u32>) -> GenerationParams {
    GenerationParams {
        max_tokens,
        sampling,
        stop_tokens: stop,
    }
}

#[test]
fn greedy_speculative_equals_dense_for_every_draft_depth_and_length() {
    let model = SyntheticSpec::tiny(6).build(DType::F32).unwrap();
    for prompt in PROMPTS {
        let p = params(17, SamplingParams::greedy(), Vec::new());
        let dense = generate_dense(&model, prompt, &p, |_| Ok(())).unwrap();
        for layer in [1, 3, 6] {
            for k in [1, 4, 16] {
                let mut hook = FixedExit::new(layer, 6).unwrap();
                let spec = generate_self_speculative(
                    &model,
                    prompt,
                    &p,
                    &mut hook,
                    &DraftSettings::fixed(k),
                    |_, _| Ok(()),
                )
                .unwrap();
                assert_eq!(
                    spec.generation.tokens, dense.tokens,
                    "draft layer {layer}, k {k}, prompt {prompt:?}"
                );
                assert!(spec.drafted > 0 && spec.accepted <= spec.drafted);
                assert!((spec.mean_draft_depth() - layer as f64).abs() < 1e-9);
                let from_drafts = spec.depths.iter().filter(|&&d| d == layer).count();
                if layer < 6 {
                    assert_eq!(
                        from_drafts, spec.accepted,
                        "accepted drafts keep their depth"
                    );
                }
                assert!(spec.depths.iter().all(|&d| d == layer || d == 6));
            }
        }
        let mut hook = FixedExit::new(2, 6).unwrap();
        // Settings that change how much is drafted per round, never the text: a fixed confidence
        // bar, one that adapts to the running acceptance, drafts scored over part of the
        // vocabulary (all but impossible at one token), and a bar nothing passes.
        let settings = [
            ("confidence-limited drafts", 0.5, 0.0, 0),
            ("adaptive confidence bar", 0.2, 0.9, 0),
            ("draft vocabulary 2048", 0.0, 0.0, 2048),
            ("draft vocabulary 1", 0.0, 0.0, 1),
            ("nothing is surer than certain", 1.0, 0.0, 0),
        ];
        for (what, min_confidence, target_acceptance, vocab) in settings {
            let draft = DraftSettings {
                min_confidence,
                target_acceptance,
                vocab,
                ..DraftSettings::fixed(6)
            };
            let spec =
                generate_self_speculative(&model, prompt, &p, &mut hook, &draft, |_, _| Ok(()))
                    .unwrap();
            assert_eq!(spec.generation.tokens, dense.tokens, "{what}");
            if min_confidence == 1.0 {
                // Each round stops after its first draft.
                assert!(spec.drafted <= spec.rounds, "at most one draft per round");
            }
        }
        let too_big = DraftSettings {
            vocab: 5000,
            ..DraftSettings::fixed(4)
        };
        let err = generate_self_speculative(&model, prompt, &p, &mut hook, &too_big, |_, _| Ok(()))
            .unwrap_err();
        assert!(format!("{err:#}").contains("5000"), "{err:#}");
        let mut hook = WanderingExit { pass: 0 };
        let spec = generate_self_speculative(
            &model,
            prompt,
            &p,
            &mut hook,
            &DraftSettings::fixed(5),
            |_, _| Ok(()),
        )
        .unwrap();
        assert_eq!(spec.generation.tokens, dense.tokens, "wandering drafts");
    }
}

#[test]
fn stop_tokens_end_speculative_and_dense_at_the_same_place() {
    let model = SyntheticSpec::tiny(4).build(DType::F32).unwrap();
    let free = generate_dense(
        &model,
        PROMPTS[0],
        &params(12, SamplingParams::greedy(), Vec::new()),
        |_| Ok(()),
    )
    .unwrap();
    let stop = params(12, SamplingParams::greedy(), vec![free.tokens[6]]);
    let dense = generate_dense(&model, PROMPTS[0], &stop, |_| Ok(())).unwrap();
    let mut hook = FixedExit::new(2, 4).unwrap();
    let mut streamed = Vec::new();
    let spec = generate_self_speculative(
        &model,
        PROMPTS[0],
        &stop,
        &mut hook,
        &DraftSettings::fixed(4),
        |t, _| {
            streamed.push(t);
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(dense.finish_reason, FinishReason::Stop);
    assert_eq!(spec.generation.finish_reason, FinishReason::Stop);
    assert_eq!(spec.generation.tokens, dense.tokens);
    assert_eq!(streamed, dense.tokens);
}

#[test]
fn full_depth_drafts_are_always_accepted_when_sampling() {
    let model = SyntheticSpec::tiny(4).build(DType::F32).unwrap();
    let sampling = SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        seed: 3,
        ..SamplingParams::greedy()
    };
    let mut hook = FixedExit::new(4, 4).unwrap();
    let p = params(30, sampling, Vec::new());
    let spec = generate_self_speculative(
        &model,
        PROMPTS[0],
        &p,
        &mut hook,
        &DraftSettings::fixed(3),
        |_, _| Ok(()),
    )
    .unwrap();
    assert_eq!(spec.generation.tokens.len(), 30);
    assert!(spec.acceptance_rate() > 0.99, "{}", spec.acceptance_rate());
}

/// Draws a draft from q, applies the rule, and counts what comes out.
fn rule_frequencies(p: &[(u32, f32)], q: &[(u32, f32)], draws: usize) -> Vec<f64> {
    let mut sampler = Sampler::new(SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        seed: 11,
        ..SamplingParams::greedy()
    })
    .unwrap();
    let mut counts = [0usize; 4];
    for _ in 0..draws {
        let draft = sampler.draw(q);
        let token = match accept_or_resample(p, q, draft, &mut sampler) {
            Verdict::Accept => draft,
            Verdict::Replace(t) => t,
        };
        counts[token as usize] += 1;
    }
    counts.iter().map(|&c| c as f64 / draws as f64).collect()
}

#[test]
fn the_accept_reject_rule_reproduces_the_target_distribution() {
    let p = [(0, 0.5), (1, 0.3), (2, 0.2)];
    // q puts mass on a token p never picks and misses one p likes.
    let q = [(3, 0.4), (1, 0.5), (0, 0.1)];
    let freq = rule_frequencies(&p, &q, 40_000);
    for (t, want) in [(0, 0.5), (1, 0.3), (2, 0.2), (3, 0.0)] {
        assert!(
            (freq[t] - want).abs() < 0.01,
            "token {t}: {} vs {want} ({freq:?})",
            freq[t]
        );
    }
}

#[test]
fn greedy_rule_keeps_only_the_argmax_and_draws_nothing() {
    let mut sampler = Sampler::new(SamplingParams::greedy()).unwrap();
    let p = [(7, 1.0)];
    assert_eq!(
        accept_or_resample(&p, &[(7, 1.0)], 7, &mut sampler),
        Verdict::Accept
    );
    assert_eq!(
        accept_or_resample(&p, &[(9, 1.0)], 9, &mut sampler),
        Verdict::Replace(7)
    );
}

#[test]
fn zero_draft_tokens_is_an_error() {
    let model = SyntheticSpec::tiny(2).build(DType::F32).unwrap();
    let mut hook = FixedExit::new(1, 2).unwrap();
    let p = params(4, SamplingParams::greedy(), Vec::new());
    let e = generate_self_speculative(
        &model,
        PROMPTS[1],
        &p,
        &mut hook,
        &DraftSettings::fixed(0),
        |_, _| Ok(()),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("draft tokens"), "{e}");
}

#[test]
fn the_confidence_bar_chases_the_target_acceptance() {
    let fixed = DraftSettings {
        min_confidence: 0.4,
        ..DraftSettings::fixed(4)
    };
    let mut bar = ConfidenceBar::new(&fixed);
    bar.update(4, 0);
    assert_eq!(bar.bar, 0.4, "no target: the bar stays");
    let adaptive = DraftSettings {
        target_acceptance: 0.5,
        ..fixed
    };
    let mut bar = ConfidenceBar::new(&adaptive);
    // Every draft rejected: the running acceptance drops below 0.5, so the bar rises.
    bar.update(4, 0);
    assert!((bar.bar - 0.45).abs() < 1e-6, "{}", bar.bar);
    bar.update(0, 0);
    assert!(
        (bar.bar - 0.45).abs() < 1e-6,
        "a round without drafts says nothing"
    );
    // Rounds that keep everything pull the acceptance back above the target: the bar falls.
    let before = bar.bar;
    for _ in 0..3 {
        bar.update(4, 4);
    }
    assert!(bar.bar < before, "{} !< {before}", bar.bar);
    // Bounded: never below 0, never so high that nothing passes.
    for _ in 0..40 {
        bar.update(4, 4);
    }
    assert_eq!(bar.bar, 0.0);
    for _ in 0..40 {
        bar.update(4, 0);
    }
    assert!(bar.bar < 1.0 && bar.bar >= 0.95, "{}", bar.bar);
    let bad = DraftSettings {
        target_acceptance: 1.0,
        ..fixed
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("target acceptance"));
}
