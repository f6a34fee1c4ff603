//! Speculative decoding with prompt-lookup drafts on the real model (SmolLM2-135M-Instruct,
//! Q4_1 GGUF) through the shipped config: the text is dense's, token for token, on prompts
//! where drafts are mostly right (a quote, a rewrite) and where they are not (open chat). Also
//! skip-layer drafts and the search for their skip set.

mod common;

use adainfer::eval::workloads::Workload;

const CONFIG: &str = "plugin-configs/smollm2-135m-instruct-speculative.toml";

fn generate(prompt: &str, mode: &str) -> String {
    generate_with(prompt, mode, &[])
}

fn generate_with(prompt: &str, mode: &str, flags: &[&str]) -> String {
    let mut args = vec![
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
    args.extend_from_slice(flags);
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
        "2",
        // Needs passes of up to 3 rows: more than --verify-cost-rows asks for.
        "--lookup-ceiling",
        "2",
        "--format",
        "json",
    ]);
    let costs = v["verify_costs"].as_array().unwrap();
    assert_eq!(
        costs.len(),
        3,
        "--lookup-ceiling 2 times passes of up to 3 rows"
    );
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
    // The ceiling from dense's answers: more drafts settle at least as many tokens a pass, and
    // verifying only the drafts that will be kept is never slower than verifying whole drafts.
    for workload in ["rewrite", "chat"] {
        let c = v[format!("{workload}_lookup_ceiling")].as_array().unwrap();
        assert_eq!(c.len(), 2, "{workload}: {v}");
        let f = |i: usize, key: &str| c[i][key].as_f64().unwrap();
        assert!(f(1, "tokens_per_pass") >= f(0, "tokens_per_pass"));
        for i in 0..2 {
            assert!(f(i, "oracle_speedup_bound") >= f(i, "fixed_speedup_bound") - 1e-12);
        }
    }
    assert!(
        v["rewrite_lookup_ceiling"][1]["tokens_per_pass"]
            .as_f64()
            .unwrap()
            > 1.0
    );
}

#[test]
fn skip_layer_drafts_print_what_dense_prints() {
    let skip = [
        "--draft-source",
        "skip_layers",
        "--draft-skip",
        "7,14",
        "--draft-tokens",
        "3",
    ];
    // `auto` given the same set weighs skip drafts against lookup drafts each round.
    let auto = ["--draft-source", "auto", "--draft-skip", "7,14"];
    for workload in [Workload::Squad, Workload::Chat] {
        let prompt = &workload.messages(1).unwrap()[0];
        let dense = generate(prompt, "dense");
        for flags in [&skip[..], &auto[..]] {
            assert_eq!(
                generate_with(prompt, "self_speculative", flags),
                dense,
                "prompt {prompt:?}, {flags:?}"
            );
        }
    }
    let (ok, _, err) = common::adainfer(&[
        "generate",
        "--config",
        CONFIG,
        "--prompt",
        "Hi",
        "--mode",
        "self_speculative",
        "--draft-source",
        "skip_layers",
        "--draft-skip",
        "7,31",
    ]);
    assert!(
        !ok && err.contains("block 31") && err.contains("30 blocks"),
        "{err}"
    );
}

#[test]
fn the_skip_set_search_predicts_measures_and_picks_a_set() {
    let v = common::run_json(&[
        "search-skip-draft",
        "--config",
        CONFIG,
        "--prompts",
        "1",
        "--tokens",
        "8",
        "--max-skipped",
        "2",
        "--patience",
        "2",
        "--max-drafts",
        "2",
        "--measure",
        "2",
        "--format",
        "json",
    ]);
    let path = v["path"].as_array().unwrap();
    assert_eq!(path.len(), 3, "sizes 0, 1 and 2: {v}");
    assert_eq!(path[0]["skip"].as_array().unwrap().len(), 0);
    assert_eq!(
        path[0]["agreement"], 1.0,
        "nothing left out agrees by construction"
    );
    assert_eq!(path[2]["skip"].as_array().unwrap().len(), 2);
    // The size-2 set extends the size-1 one (greedy forward selection).
    let one = path[1]["skip"][0].as_u64().unwrap();
    assert!(path[2]["skip"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b.as_u64() == Some(one)));
    assert_eq!(v["costs"]["verify"].as_array().unwrap().len(), 3);
    let measured = v["measured"].as_array().unwrap();
    assert_eq!(measured.len(), 3, "dense and the two best predicted");
    for m in &measured[1..] {
        assert!(m["mode"]
            .as_str()
            .unwrap()
            .starts_with("self_speculative/skip_layers/"));
        assert_eq!(m["identical_outputs"], 1, "lossless: {m}");
    }
    let picked = v["pick"]["skip"].as_array().unwrap().len();
    assert!((1..=2).contains(&picked), "{v}");
}
