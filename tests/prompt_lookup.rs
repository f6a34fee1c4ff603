//! Speculative decoding with prompt-lookup drafts on the real model (SmolLM2-135M-Instruct,
//! Q4_1 GGUF) through the shipped config: the text is dense's, token for token, on prompts
//! where drafts are mostly right (a quote, a rewrite) and where they are not (open chat).

mod common;

use adainfer::eval::workloads::Workload;

const CONFIG: &str = "plugin-configs/smollm2-135m-instruct-speculative.toml";

fn generate(prompt: &str, mode: &str) -> String {
    let args = [
        "generate",
        "--config",
        CONFIG,
        "--chat",
        "--prompt",
        prompt,
        "--max-tokens",
        "48",
        "--mode",
        mode,
    ];
    let (ok, out, err) = common::adainfer(&args);
    assert!(ok, "generate --mode {mode} failed: {err}");
    out
}

#[test]
fn the_shipped_speculative_config_prints_what_dense_prints() {
    let mut prompts = Vec::new();
    for workload in Workload::ALL {
        prompts.extend(workload.messages(2).unwrap());
    }
    for prompt in &prompts {
        let dense = generate(prompt, "dense");
        assert!(!dense.trim().is_empty(), "no text for {prompt:?}");
        assert_eq!(
            generate(prompt, "self_speculative"),
            dense,
            "prompt {prompt:?}"
        );
    }
}

#[test]
fn bench_decode_reports_each_workload_and_the_verification_cost() {
    let v = common::run_json(&[
        "bench-decode",
        "--config",
        CONFIG,
        "--workloads",
        "rewrite,chat",
        "--prompts",
        "1",
        "--max-tokens",
        "24",
        "--modes",
        "dense,self_speculative/auto/k=6",
        "--verify-cost-rows",
        "3",
        "--format",
        "json",
    ]);
    let costs = v["verify_costs"].as_array().unwrap();
    assert_eq!(costs.len(), 3);
    assert_eq!(costs[0]["vs_one_row"], 1.0);
    for workload in ["rewrite", "chat"] {
        let reports = v[workload]
            .as_array()
            .unwrap_or_else(|| panic!("no {workload}: {v}"));
        assert_eq!(reports[1]["mode"], "self_speculative/auto/k=6");
        // Lossless: the output is dense's.
        assert_eq!(reports[1]["identical_outputs"], 1, "{workload}: {v}");
        assert!(reports[1]["speedup_vs_dense"].as_f64().unwrap() > 0.0);
    }
    // The rewrite copies its paragraph: drafts are offered and most are kept.
    let rewrite = &v["rewrite"][1];
    assert!(
        rewrite["tokens_per_round"].as_f64().unwrap() > 1.0,
        "{rewrite}"
    );
}
