//! Stock mistral.rs against HF transformers and against our engine, on the shared reference
//! Llama: the same greedy continuation token for token, and the same next token.
#![cfg(feature = "mistralrs")]

mod common;

use adainfer::engine::generate::{generate_dense, GenerationParams};
use adainfer::engine::SamplingParams;
use adainfer::mistralrs::{StockMistralRs, StockOptions};
use adainfer::{Engine, LoadOptions};
use serde_json::Value;

/// A `reference.json` case's token ids under `key`.
fn ids(case: &Value, key: &str) -> Vec<u32> {
    serde_json::from_value(case[key].clone()).unwrap_or_else(|e| panic!("{key}: {e}"))
}

#[test]
fn stock_mistralrs_greedy_matches_hf_and_ours() {
    let dir = common::shared().join("reference/random-llama");
    let text = std::fs::read_to_string(dir.join("reference.json")).unwrap();
    let reference: Value = serde_json::from_str(&text).unwrap();
    let cases = reference["cases"].as_array().expect("cases");
    assert!(!cases.is_empty());
    // The reference continuations run a fixed 12 tokens, eos not stopping.
    let stock = StockMistralRs::load(&dir, &StockOptions { stop_at_eos: false }).unwrap();
    let ours = Engine::load(&dir, &LoadOptions::default()).unwrap();
    for (c, case) in cases.iter().enumerate() {
        let (input_ids, greedy) = (ids(case, "input_ids"), ids(case, "greedy_continuation"));
        let prompt = case["prompt"].as_str().expect("prompt");
        let n = greedy.len();
        let theirs = stock.complete(&input_ids, n, true).unwrap();
        assert_eq!(
            theirs.tokens, greedy,
            "case {c}: mistral.rs vs HF greedy continuation"
        );
        let params = GenerationParams {
            max_tokens: n,
            sampling: SamplingParams::greedy(),
            stop_tokens: vec![],
        };
        let g = generate_dense(&ours.model, &input_ids, &params, |_| Ok(())).unwrap();
        assert_eq!(g.tokens, theirs.tokens, "case {c}: ours vs mistral.rs");
        assert_eq!(
            stock.next_token(&input_ids).unwrap(),
            greedy[0],
            "case {c}: next token"
        );
        // From text, mistral.rs tokenizes the prompt itself (no BOS for this tokenizer).
        let from_text = stock.complete_text(prompt, 3, true).unwrap();
        assert_eq!(from_text.tokens, greedy[..3], "case {c}: text prompt");
        assert_eq!(from_text.completion_tokens, 3);
    }
}

#[test]
fn stock_mistralrs_refuses_a_missing_directory() {
    let err = StockMistralRs::load(
        &common::shared().join("reference/no-such-model"),
        &StockOptions::default(),
    )
    .err()
    .expect("a missing directory must be refused");
    assert!(err.to_string().contains("config.json"), "{err:#}");
}

/// The eval's `mistralrs` arm answers the same prompts as our dense arm on the task model.
#[test]
fn eval_mistralrs_arm_agrees_with_our_dense_arm() {
    let model = common::task_model();
    let doc = common::run_json(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--task",
        "sst2",
        "--limit",
        "16",
        "--arms",
        "dense,mistralrs",
        "--format",
        "json",
    ]);
    let (dense, stock) = (&doc["arms"]["dense"], &doc["arms"]["mistralrs"]);
    assert_eq!(stock["agreement_with_dense"], 1.0, "{doc}");
    assert_eq!(stock["accuracy"], dense["accuracy"], "{doc}");
    assert_eq!(stock["avg_layers"], 12.0, "{doc}");
    assert_eq!(stock["pruning_ratio"], 0.0, "{doc}");
}

/// `adainfer bench` times both engines in one run and prints the ratio.
#[test]
fn bench_times_both_engines_and_reports_the_ratio() {
    let model = common::shared().join("reference/random-llama");
    let doc = common::run_json(&[
        "bench",
        "--model",
        model.to_str().unwrap(),
        "--prompt-tokens",
        "8",
        "--decode-tokens",
        "4",
        "--repeats",
        "1",
        "--batch",
        "3",
        "--format",
        "json",
    ]);
    let results = doc["results"].as_array().expect("results");
    let names: Vec<&str> = results
        .iter()
        .filter_map(|r| r["engine"].as_str())
        .collect();
    assert_eq!(names, ["adainfer-dense", "mistral.rs"], "{doc}");
    for r in results {
        for key in ["prefill_tokens_per_second", "decode_tokens_per_second"] {
            let v = r[key].as_f64().unwrap_or(0.0);
            assert!(v.is_finite() && v > 0.0, "{key} in {r}");
        }
    }
    let ratio = &doc["ratio_to_mistralrs"];
    assert!(ratio["prefill"].as_f64().is_some_and(|r| r > 0.0), "{doc}");
    assert!(ratio["decode"].as_f64().is_some_and(|r| r > 0.0), "{doc}");
    let batch = &doc["batch"];
    assert_eq!(batch["batch"], 3, "{doc}");
    assert!(batch["speedup"].as_f64().is_some_and(|s| s > 0.0), "{doc}");
}
