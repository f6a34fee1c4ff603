//! Every model family through the user's commands: `inspect`, `generate` in each mode and KV
//! fill, `eval` with the adaptive arm — on each family's reference model and on a Gemma 3 GGUF.
//! Correctness of the numbers is `reference_parity` and the KV-fill unit tests; this checks that
//! nothing in the commands is Llama-shaped.

mod common;

use adainfer::engine::gguf::writer::write_hf_dir_as_gguf;
use candle_core::quantized::GgmlDType;
use std::path::PathBuf;

fn models() -> Vec<PathBuf> {
    let reference = common::shared().join("reference");
    let mut models: Vec<PathBuf> = ["random-gemma3", "random-opt", "random-gptj"]
        .iter()
        .map(|m| reference.join(m))
        .collect();
    let gguf = std::env::temp_dir().join(format!(
        "adainfer-families-{}/random-gemma3-q8_0.gguf",
        std::process::id()
    ));
    std::fs::create_dir_all(gguf.parent().unwrap()).unwrap();
    write_hf_dir_as_gguf(&models[0], &gguf, GgmlDType::Q8_0).unwrap();
    models.push(gguf);
    models
}

fn run(args: &[&str]) -> String {
    let (ok, out, err) = common::adainfer(args);
    assert!(ok, "adainfer {args:?} failed: {err}");
    out
}

#[test]
fn every_family_runs_every_command() {
    let prompt = "once upon a time there was";
    for model in models() {
        let m = model.to_str().unwrap();
        let lens = run(&["inspect", "--model", m, "--prompt", prompt]);
        assert!(
            lens.lines().any(|l| l.trim_start().starts_with("6 ")),
            "{m}: {lens}"
        );

        let generate = |extra: &[&str]| {
            let mut args = vec![
                "generate",
                "--model",
                m,
                "--prompt",
                prompt,
                "--max-tokens",
                "10",
            ];
            args.extend_from_slice(extra);
            run(&args)
        };
        let dense = generate(&["--mode", "dense"]);
        assert!(!dense.trim().is_empty(), "{m}: no text");
        let speculative = generate(&["--mode", "self_speculative", "--draft-layer", "2"]);
        assert_eq!(
            speculative, dense,
            "{m}: self-speculative text differs from dense"
        );
        for fill in ["propagate", "recompute", "dense_after_prefill"] {
            let exited = generate(&[
                "--mode",
                "early_exit",
                "--draft-layer",
                "3",
                "--kv-fill",
                fill,
            ]);
            assert!(!exited.trim().is_empty(), "{m} {fill}: no text");
            // Exiting after the last block is no exit at all.
            let full = generate(&[
                "--mode",
                "early_exit",
                "--draft-layer",
                "6",
                "--kv-fill",
                fill,
            ]);
            assert_eq!(
                full, dense,
                "{m} {fill}: an exit after block 6 changed the text"
            );
        }

        let config = "plugin-configs/tiny-llama-sst2-agnews-gap_threshold.toml";
        let eval = run(&[
            "eval", "--config", config, "--model", m, "--task", "sst2", "--limit", "3", "--format",
            "json",
        ]);
        let eval: serde_json::Value = serde_json::from_str(&eval).unwrap();
        assert_eq!(eval["num_layers"], 6, "{m}");
        let adaptive = &eval["arms"]["adaptive"];
        assert!(
            adaptive["avg_layers"].as_f64().unwrap() <= 6.0,
            "{m}: {adaptive}"
        );
    }
}
