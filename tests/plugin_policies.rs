//! AdaInfer policies end to end on the vendored task model, from the shipped TOML config.

mod common;

use adainfer::engine::synthetic::SyntheticSpec;
use adainfer::engine::Outputs;
use adainfer::plugin::lens::LogitLens;
use adainfer::plugin::policy::{oracle_exit_layer, shortgpt_drop_last, unified_skip_layers};
use adainfer::plugin::{load_engine, AdaInfer, PluginConfig};
use adainfer::{Engine, LoadOptions};
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::PathBuf;

const PROMPTS: [&str; 4] = [
    "Q: a gripping , funny and moving film .\nA:",
    "Q: the plot is dull and the acting is worse .\nA:",
    "Q: Stocks fall as oil prices climb. Shares slid on Monday as crude rose.\nA:",
    "Q: Hello\nA:",
];

fn config_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("plugin-configs/tiny-llama-sst2-agnews-gap_threshold.toml")
}

fn config(sets: &[&str]) -> anyhow::Result<PluginConfig> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    PluginConfig::load(&config_path(), &sets)
}

fn engine() -> Engine {
    load_engine(&config(&[]).unwrap(), None).unwrap()
}

fn lens(engine: &Engine, prompt: &str) -> LogitLens {
    let ids = engine.encode(prompt).unwrap();
    let mut lens = LogitLens::new(1, false);
    let mut cache = engine.model.new_cache();
    engine
        .model
        .forward(&ids, &mut cache, Some(&mut lens), Outputs::LastToken)
        .unwrap();
    lens
}

/// Exit layer (None = ran to the end), skipped 0-based blocks, last-token logits.
fn run(
    engine: &Engine,
    hook: &mut AdaInfer,
    prompt: &str,
) -> (Option<usize>, Vec<usize>, Vec<f32>) {
    let ids = engine.encode(prompt).unwrap();
    let mut cache = engine.model.new_cache();
    let out = engine
        .model
        .forward(&ids, &mut cache, Some(hook), Outputs::LastToken)
        .unwrap();
    let logits = out.last_logits().unwrap();
    (out.exit.map(|e| e.layer), out.skipped, logits)
}

#[test]
fn gap_threshold_exits_where_the_gap_first_crosses_theta() {
    let engine = engine();
    let mut checked_mid_exit = 0;
    for prompt in PROMPTS {
        let lens = lens(&engine, prompt);
        for theta in [0.3, 0.5, 0.7, 0.8, 0.9, 0.95] {
            let first = lens.layers.iter().find(|l| l.gap >= theta).map(|l| l.layer);
            let expected = first.filter(|&l| l < 12);
            let c = config(&[&format!("policy.threshold={theta}")]).unwrap();
            let mut hook = AdaInfer::from_config(&c, &engine).unwrap();
            let (exit, _, logits) = run(&engine, &mut hook, prompt);
            assert_eq!(exit, expected, "{prompt:?} θ = {theta}");
            if let Some(layer) = exit {
                checked_mid_exit += (layer > 1) as usize;
                // The output is the logit lens of the exit layer.
                let best = logits
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .unwrap()
                    .0 as u32;
                assert_eq!(best, lens.layers[layer - 1].top_ids[0]);
            }
        }
    }
    assert!(checked_mid_exit > 0, "no prompt crossed θ past layer 1");
}

#[test]
fn min_layer_is_honoured_and_bounded() {
    let engine = engine();
    let c = config(&["policy.threshold=0.3", "limits.min_layer=6"]).unwrap();
    let mut hook = AdaInfer::from_config(&c, &engine).unwrap();
    for prompt in PROMPTS {
        let (exit, _, _) = run(&engine, &mut hook, prompt);
        assert!(exit.is_none_or(|l| l >= 6), "{prompt:?} exited at {exit:?}");
    }
    assert!(hook.stats().guard_vetoes > 0);
    let c = config(&["limits.min_layer=13"]).unwrap();
    let err = AdaInfer::from_config(&c, &engine).err().unwrap();
    assert!(format!("{err:#}").contains("min_layer = 13"), "{err:#}");
}

#[test]
fn unknown_names_are_errors_listing_the_valid_ones() {
    let engine = engine();
    let c = config(&[]).unwrap();
    let err = AdaInfer::for_policy(&c, &engine, "gap_treshold")
        .err()
        .unwrap();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("gap_treshold") && msg.contains("unified_skip"),
        "{msg}"
    );
    let c = config(&["features.names=[\"gap\", \"cos_mpl\"]"]).unwrap();
    let msg = format!("{:#}", AdaInfer::from_config(&c, &engine).err().unwrap());
    assert!(msg.contains("cos_mpl") && msg.contains("cos_mlp"), "{msg}");
    let msg = format!(
        "{:#}",
        config(&["policy.gap_threshold.theta=0.5"]).unwrap_err()
    );
    assert!(msg.contains("theta"), "{msg}");
}

#[test]
fn static_policies_skip_what_their_formula_says() {
    let engine = engine();
    let c = config(&["policy.kind=unified_skip", "policy.target_speedup=2.0"]).unwrap();
    let mut hook = AdaInfer::from_config(&c, &engine).unwrap();
    let (exit, skipped, _) = run(&engine, &mut hook, PROMPTS[0]);
    assert_eq!(exit, None);
    assert_eq!(skipped, unified_skip_layers(12, 2.0).unwrap());
    assert_eq!(skipped.len(), 6);
    assert_eq!(hook.stats().layers_run, 6);

    let c = config(&["policy.kind=shortgpt", "policy.layers=3"]).unwrap();
    let mut hook = AdaInfer::from_config(&c, &engine).unwrap();
    let (_, skipped, _) = run(&engine, &mut hook, PROMPTS[1]);
    assert_eq!(skipped, vec![9, 10, 11]);
    assert_eq!(skipped, shortgpt_drop_last(12, 3).unwrap());

    let c = config(&[
        "policy.kind=shortgpt",
        "policy.by=block_influence",
        "policy.calibration_limit=4",
    ])
    .unwrap();
    let mut hook = AdaInfer::from_config(&c, &engine).unwrap();
    let (_, skipped, _) = run(&engine, &mut hook, PROMPTS[1]);
    assert_eq!(skipped.len(), 2);
}

#[test]
fn oracle_reports_the_settling_layer() {
    let engine = engine();
    let c = config(&[]).unwrap();
    let mut hook = AdaInfer::for_policy(&c, &engine, "oracle").unwrap();
    let mut expected = vec![0u64; 12];
    for prompt in PROMPTS {
        let top1: Vec<u32> = lens(&engine, prompt)
            .layers
            .iter()
            .map(|l| l.top_ids[0])
            .collect();
        expected[oracle_exit_layer(&top1) - 1] += 1;
        let (exit, skipped, _) = run(&engine, &mut hook, prompt);
        assert_eq!((exit, skipped.len()), (None, 0));
    }
    assert_eq!(hook.stats().exits_per_layer, expected);
    assert_eq!(hook.stats().passes, 4);
}

#[test]
fn nan_features_fall_back_to_continuing() {
    // A model whose second block has a zero attention output: its cos_attn (and the next
    // layer's, compared with it) is 0/0.
    let dir = std::env::temp_dir().join(format!("adainfer-nan-{}", std::process::id()));
    let spec = SyntheticSpec::tiny(6);
    spec.write_dir(&dir, &common::tokenizer(), 1).unwrap();
    let mut tensors: HashMap<String, Tensor> = spec.tensors().unwrap().into_iter().collect();
    let name = "model.layers.1.self_attn.o_proj.weight";
    tensors.insert(name.into(), tensors[name].zeros_like().unwrap());
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let engine = Engine::load(&dir, &LoadOptions::default()).unwrap();
    let c = config(&[
        "policy.kind=top_prob_threshold",
        "policy.threshold=0.0",
        "features.names=[\"cos_attn\", \"gap\"]",
        "limits.min_layer=2",
    ])
    .unwrap();
    let mut hook = AdaInfer::from_config(&c, &engine).unwrap();
    let (exit, _, _) = run(&engine, &mut hook, "Q: Hello\nA:");
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(exit, Some(4));
    assert_eq!(hook.stats().nan_fallbacks, 2);
    assert_eq!(hook.stats().guard_vetoes, 1);
}

#[test]
fn every_shipped_config_runs_on_its_model() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugin-configs");
    let vendored = engine();
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let c = PluginConfig::load(&path, &[]).unwrap();
        // The vendored model's configs share one engine; the others load their own (SmolLM2).
        let own;
        let engine = if c.model_dir().ends_with("tiny-llama-sst2-agnews") {
            &vendored
        } else {
            own = adainfer::plugin::load_engine(&c, None).unwrap();
            &own
        };
        // Checked-in classifiers must match their model (identity, features).
        let mut hook = AdaInfer::from_config(&c, engine)
            .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        run(engine, &mut hook, PROMPTS[0]);
        assert_eq!(hook.stats().passes, 1);
        seen.push(c.policy.kind.clone());
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "gap_threshold",
            "gap_threshold",
            "gap_threshold",
            "gap_threshold",
            "gap_threshold",
            "gap_threshold",
            "logistic",
            "svm",
            "svm",
            "unified_skip"
        ]
    );
}

#[test]
fn label_tokens_restrict_the_probe_to_the_answer_set() {
    use adainfer::plugin::features::FeatureExtractor;
    use adainfer::plugin::training::{collect_rows, CollectPrompt};
    let engine = engine();
    let answers = "[275, 289]"; // " positive", " negative"
    let c = config(&[
        &format!("features.label_tokens={answers}"),
        "policy.threshold=0.9",
    ])
    .unwrap();
    let features =
        FeatureExtractor::new(&c.features.names, c.features.label_tokens.clone()).unwrap();
    let prompts: Vec<CollectPrompt> = PROMPTS
        .iter()
        .enumerate()
        .map(|(i, p)| CollectPrompt {
            id: i.to_string(),
            text: p.to_string(),
            gold_token: None,
        })
        .collect();
    let rows = collect_rows(&engine, features, &prompts, false).unwrap();
    let mut hook = AdaInfer::from_config(&c, &engine).unwrap();
    let mut differs_from_full = false;
    for (i, prompt) in PROMPTS.iter().enumerate() {
        let mine: Vec<_> = rows.iter().filter(|r| r.prompt == i.to_string()).collect();
        // Over two tokens, gap = |p1 − p2| of a two-way softmax.
        let expected = mine
            .iter()
            .find(|r| r.features[0] >= 0.9)
            .map(|r| r.layer)
            .filter(|&l| l < 12);
        let (exit, _, _) = run(&engine, &mut hook, prompt);
        assert_eq!(exit, expected, "{prompt:?}");
        let full = lens(&engine, prompt);
        differs_from_full |= mine
            .iter()
            .zip(&full.layers)
            .any(|(r, l)| (r.features[0] - l.gap).abs() > 1e-3);
    }
    assert!(differs_from_full);
}
