//! Generation modes on the real checkpoints: self-speculative decoding must reproduce dense
//! greedy text token for token, on the vendored task model and every reference model.

mod common;

use adainfer::engine::early_exit::FixedExit;
use adainfer::engine::kv_fill::KvFill;
use adainfer::engine::modes::{generate_mode, Mode, ModeSpec};
use adainfer::engine::speculative::DraftSettings;
use adainfer::engine::{GenerationParams, SamplingParams};
use adainfer::eval::tasks::{self, Split, Task};
use adainfer::plugin::{load_engine, AdaInfer, PluginConfig};
use adainfer::{Engine, LoadOptions};
use std::path::PathBuf;

fn vendored_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/tiny-llama-sst2-agnews")
}

/// SST-2 dev sentences in the task model's prompt format.
fn sst2_prompts(count: usize) -> Vec<String> {
    tasks::load_examples(Task::Sst2, Split::Test, Some(count))
        .unwrap()
        .iter()
        .map(tasks::prompt)
        .collect()
}

fn greedy(engine: &Engine, max_tokens: usize) -> GenerationParams {
    GenerationParams {
        max_tokens,
        sampling: SamplingParams::greedy(),
        stop_tokens: engine.eos_token_ids.clone(),
    }
}

/// Generates every prompt densely and speculatively; returns (drafted, accepted).
fn assert_speculative_is_dense(
    engine: &Engine,
    prompts: &[String],
    draft_layer: usize,
    draft_tokens: usize,
) -> (usize, usize) {
    let params = greedy(engine, 20);
    let speculative = ModeSpec {
        mode: Mode::SelfSpeculative,
        draft: DraftSettings::fixed(draft_tokens),
        ..ModeSpec::dense()
    };
    let (mut drafted, mut accepted) = (0, 0);
    for prompt in prompts {
        let ids = engine.encode(prompt).unwrap();
        let dense = generate_mode(
            &engine.model,
            &ids,
            &params,
            &ModeSpec::dense(),
            None,
            |_, _| Ok(()),
        )
        .unwrap();
        let mut hook = FixedExit::new(draft_layer, engine.model.num_layers()).unwrap();
        let spec = generate_mode(
            &engine.model,
            &ids,
            &params,
            &speculative,
            Some(&mut hook),
            |_, _| Ok(()),
        )
        .unwrap();
        assert_eq!(
            engine.decode(&spec.generation.tokens).unwrap(),
            engine.decode(&dense.generation.tokens).unwrap(),
            "prompt {prompt:?}, draft layer {draft_layer}, k {draft_tokens}"
        );
        assert_eq!(spec.generation.tokens, dense.generation.tokens);
        assert_eq!(
            spec.generation.finish_reason,
            dense.generation.finish_reason
        );
        drafted += spec.drafted;
        accepted += spec.accepted;
    }
    (drafted, accepted)
}

#[test]
fn speculative_greedy_text_equals_dense_on_the_task_model() {
    let engine = Engine::load(&vendored_model(), &LoadOptions::default()).unwrap();
    let prompts = sst2_prompts(16);
    for (layer, k) in [(4, 4), (9, 6)] {
        let (drafted, accepted) = assert_speculative_is_dense(&engine, &prompts, layer, k);
        assert!(drafted > 0 && accepted <= drafted);
    }
}

#[test]
fn speculative_greedy_text_equals_dense_on_the_reference_models() {
    let prompts: Vec<String> = [
        "Q: hello",
        "The quick brown fox",
        "once upon a time there was",
        "1 2 3 4 5",
        "Q: it 's a charming and often affecting journey .\nA:",
        "the",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for dir in common::reference_models() {
        let engine = Engine::load(&dir, &LoadOptions::default()).unwrap();
        for (layer, k) in [(2, 3), (5, 5)] {
            assert_speculative_is_dense(&engine, &prompts, layer, k);
        }
    }
}

/// The command line prints the same text in both modes (what a user sees), with a fixed draft
/// layer and with the plugin config's policy.
#[test]
fn generate_command_prints_dense_text_in_self_speculative_mode() {
    let model = vendored_model();
    let model = model.to_str().unwrap();
    let config = plugin_config();
    let config = config.to_str().unwrap();
    let run = |args: &[&str]| {
        let prompt = "Q: the film is a charming , funny delight .\nA:";
        let mut all = vec!["generate", "--prompt", prompt, "--max-tokens", "24"];
        all.extend_from_slice(args);
        let (ok, out, err) = common::adainfer(&all);
        assert!(ok, "{err}");
        out
    };
    let dense = run(&["--model", model, "--mode", "dense"]);
    assert!(dense.len() > 60, "{dense}");
    let fixed = run(&[
        "--model",
        model,
        "--mode",
        "self_speculative",
        "--draft-layer",
        "3",
        "--draft-tokens",
        "5",
    ]);
    assert_eq!(fixed, dense);
    assert_eq!(run(&["--config", config]), dense);
    let exit = run(&[
        "--model",
        model,
        "--mode",
        "early_exit",
        "--draft-layer",
        "3",
        "--verbose",
    ]);
    assert!(exit.contains("depth 3"), "{exit}");
}

fn plugin_config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("plugin-configs/generation/tiny-llama-sst2-agnews-self_speculative.toml")
}

/// With a plugin config the AdaInfer policy picks draft depths; the text is still dense's.
#[test]
fn plugin_config_drives_generation_and_speculation_stays_lossless() {
    let config = PluginConfig::load(&plugin_config(), &[]).unwrap();
    assert_eq!(config.generation.mode, Mode::SelfSpeculative);
    let engine = load_engine(&config, None).unwrap();
    let params = greedy(&engine, 20);
    for prompt in sst2_prompts(6) {
        let ids = engine.encode(&prompt).unwrap();
        let dense = generate_mode(
            &engine.model,
            &ids,
            &params,
            &ModeSpec::dense(),
            None,
            |_, _| Ok(()),
        )
        .unwrap();
        let mut hook = AdaInfer::from_config(&config, &engine).unwrap();
        let spec = generate_mode(
            &engine.model,
            &ids,
            &params,
            &config.generation,
            Some(&mut hook),
            |_, _| Ok(()),
        )
        .unwrap();
        assert_eq!(
            spec.generation.tokens, dense.generation.tokens,
            "{prompt:?}"
        );
        assert!(spec.drafted > 0);
    }
    let overridden = PluginConfig::load(
        &plugin_config(),
        &["generation.kv_fill=\"propagate\"".into()],
    )
    .unwrap();
    assert_eq!(overridden.generation.kv_fill, KvFill::Propagate);
    let bad = PluginConfig::load(&plugin_config(), &["generation.draft.k=3".into()]).unwrap_err();
    assert!(format!("{bad:#}").contains('k'), "{bad:#}");
}
