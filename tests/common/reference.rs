//! Checks of an engine against a transformers `reference.json` (per-layer last-token hidden
//! state, logit lens, final logits, greedy continuation), at a tolerance that suits the
//! weights: tight for the same f32 weights, looser where activations are quantized.

use adainfer::engine::generate::{generate_dense, GenerationParams};
use adainfer::engine::{Outputs, SamplingParams};
use adainfer::hook::Probe;
use adainfer::plugin::lens::LogitLens;
use adainfer::Engine;
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
pub struct Reference {
    pub cases: Vec<Case>,
}

#[derive(Deserialize)]
pub struct Case {
    pub prompt: String,
    pub input_ids: Vec<u32>,
    pub layers: Vec<Layer>,
    pub final_top_ids: Vec<u32>,
    pub final_logits_first16: Vec<f32>,
    pub greedy_continuation: Vec<u32>,
}

#[derive(Deserialize)]
pub struct Layer {
    pub layer: usize,
    pub top_ids: Vec<u32>,
    pub top_probs: Vec<f32>,
    pub gap: f32,
    pub hidden_last_token: Vec<f32>,
}

impl Reference {
    pub fn read(path: &Path) -> Reference {
        let text = std::fs::read_to_string(path).unwrap();
        let r: Reference = serde_json::from_str(&text).unwrap();
        assert!(!r.cases.is_empty());
        r
    }
}

/// How closely an engine must follow the reference.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    /// Hidden states within `hidden * max|x| + hidden` (None: not compared).
    pub hidden: Option<f32>,
    /// Top probabilities and gap within this.
    pub probs: f32,
    /// `None`: every top-5 id must match. `Some(m)`: only the top-1, and only where the
    /// reference's top-1 / top-2 margin is at least `m` (quantized activations may swap
    /// near-ties).
    pub top1_margin: Option<f32>,
    /// First 16 final logits within this (None: not compared).
    pub logits: Option<f32>,
    /// Final top-10 ids in order (else only the top-1).
    pub final_top10: bool,
}

impl Tolerance {
    /// The same f32 weights as the reference: only summation order differs.
    pub const EXACT: Tolerance = Tolerance {
        hidden: Some(2e-5),
        probs: 2e-5,
        top1_margin: None,
        logits: Some(1e-4),
        final_top10: true,
    };
}

pub fn check_engine(name: &str, engine: &Engine, reference: &Reference, tol: Tolerance) {
    for (c, case) in reference.cases.iter().enumerate() {
        let ids = engine.encode(&case.prompt).unwrap();
        assert_eq!(ids, case.input_ids, "{name} case {c}: tokenization");

        let mut lens = LogitLens::new(5, true);
        let mut cache = engine.model.new_cache();
        let out = engine
            .model
            .forward(&ids, &mut cache, Some(&mut lens), Outputs::LastToken)
            .unwrap();
        assert_eq!(lens.layers.len(), case.layers.len());
        for (ours, theirs) in lens.layers.iter().zip(&case.layers) {
            let at = format!("{name} case {c} layer {}", theirs.layer);
            assert_eq!(ours.layer, theirs.layer, "{at}");
            if let Some(t) = tol.hidden {
                let hidden = ours.hidden_last_token.as_ref().unwrap();
                let scale = theirs
                    .hidden_last_token
                    .iter()
                    .fold(1.0f32, |m, x| m.max(x.abs()));
                for (i, (a, b)) in hidden.iter().zip(&theirs.hidden_last_token).enumerate() {
                    assert!(
                        (a - b).abs() <= t * scale + t,
                        "{at}: hidden[{i}] {a} vs {b}"
                    );
                }
            }
            match tol.top1_margin {
                None => assert_eq!(ours.top_ids, theirs.top_ids, "{at}: top-5 ids"),
                Some(m) if theirs.top_probs[0] - theirs.top_probs[1] >= m => {
                    assert_eq!(ours.top_ids[0], theirs.top_ids[0], "{at}: top-1 id")
                }
                Some(_) => {}
            }
            let probs = if tol.top1_margin.is_some() { 1 } else { 5 };
            for (a, b) in ours.top_probs.iter().zip(&theirs.top_probs).take(probs) {
                assert!(
                    (a - b).abs() < tol.probs,
                    "{at}: top probs {:?} vs {:?}",
                    ours.top_probs,
                    theirs.top_probs
                );
            }
            assert!(
                (ours.gap - theirs.gap).abs() < tol.probs,
                "{at}: gap {} vs {}",
                ours.gap,
                theirs.gap
            );
        }
        let logits = out.last_logits().unwrap();
        let top10: Vec<u32> = Probe::from_logits(None, logits.clone())
            .top_k(10)
            .iter()
            .map(|t| t.0)
            .collect();
        // The last lens layer is the final output, so its reference margin says whether the
        // final top-1 is clear enough to compare.
        let last = case.layers.last().unwrap();
        let clear = tol
            .top1_margin
            .is_none_or(|m| last.top_probs[0] - last.top_probs[1] >= m);
        if tol.final_top10 {
            assert_eq!(top10, case.final_top_ids, "{name} case {c}: final top-10");
        } else if clear {
            assert_eq!(
                top10[0], case.final_top_ids[0],
                "{name} case {c}: final top-1"
            );
        }
        if let Some(t) = tol.logits {
            for (i, (a, b)) in logits.iter().zip(&case.final_logits_first16).enumerate() {
                assert!((a - b).abs() < t, "{name} case {c}: logit {i} {a} vs {b}");
            }
        }

        let params = GenerationParams {
            max_tokens: case.greedy_continuation.len(),
            sampling: SamplingParams::greedy(),
            stop_tokens: vec![], // the reference does not stop at eos
        };
        let g = generate_dense(&engine.model, &ids, &params, |_| Ok(())).unwrap();
        if !clear {
            continue;
        }
        assert_eq!(
            g.tokens, case.greedy_continuation,
            "{name} case {c}: greedy continuation"
        );
    }
}
