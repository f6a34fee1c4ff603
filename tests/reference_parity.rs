//! The engine against HF transformers: every shared reference model, every case in its
//! `reference.json`, per layer and at the output, plus the greedy continuation.

mod common;

use adainfer::engine::generate::{generate_dense, GenerationParams};
use adainfer::engine::{Outputs, SamplingParams};
use adainfer::hook::Probe;
use adainfer::plugin::lens::LogitLens;
use adainfer::{Engine, LoadOptions};
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    prompt: String,
    input_ids: Vec<u32>,
    layers: Vec<Layer>,
    final_top_ids: Vec<u32>,
    final_logits_first16: Vec<f32>,
    greedy_continuation: Vec<u32>,
}

#[derive(Deserialize)]
struct Layer {
    layer: usize,
    top_ids: Vec<u32>,
    top_probs: Vec<f32>,
    gap: f32,
    hidden_last_token: Vec<f32>,
}

fn check_model(dir: &Path) {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let engine = Engine::load(dir, &LoadOptions::default()).unwrap();
    let text = std::fs::read_to_string(dir.join("reference.json")).unwrap();
    let reference: Reference = serde_json::from_str(&text).unwrap();
    assert!(!reference.cases.is_empty());
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
            let hidden = ours.hidden_last_token.as_ref().unwrap();
            let scale = theirs
                .hidden_last_token
                .iter()
                .fold(1.0f32, |m, x| m.max(x.abs()));
            for (i, (a, b)) in hidden.iter().zip(&theirs.hidden_last_token).enumerate() {
                assert!(
                    (a - b).abs() <= 2e-5 * scale + 2e-5,
                    "{at}: hidden[{i}] {a} vs {b}"
                );
            }
            assert_eq!(ours.top_ids, theirs.top_ids, "{at}: top-5 ids");
            for (a, b) in ours.top_probs.iter().zip(&theirs.top_probs) {
                assert!(
                    (a - b).abs() < 2e-5,
                    "{at}: top probs {:?} vs {:?}",
                    ours.top_probs,
                    theirs.top_probs
                );
            }
            assert!(
                (ours.gap - theirs.gap).abs() < 2e-5,
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
        assert_eq!(top10, case.final_top_ids, "{name} case {c}: final top-10");
        for (i, (a, b)) in logits.iter().zip(&case.final_logits_first16).enumerate() {
            assert!(
                (a - b).abs() < 1e-4,
                "{name} case {c}: logit {i} {a} vs {b}"
            );
        }

        let params = GenerationParams {
            max_tokens: case.greedy_continuation.len(),
            sampling: SamplingParams::greedy(),
            stop_tokens: vec![], // the reference does not stop at eos
        };
        let g = generate_dense(&engine.model, &ids, &params, |_| Ok(())).unwrap();
        assert_eq!(
            g.tokens, case.greedy_continuation,
            "{name} case {c}: greedy continuation"
        );
    }
}

#[test]
fn random_llama_matches_transformers() {
    check_model(&common::reference_models()[0]);
}

#[test]
fn random_llama3_rope_matches_transformers() {
    check_model(&common::reference_models()[1]);
}

#[test]
fn random_mistral_matches_transformers() {
    check_model(&common::reference_models()[2]);
}

#[test]
fn random_qwen2_matches_transformers() {
    check_model(&common::reference_models()[3]);
}
