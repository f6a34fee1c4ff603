//! Loading Hugging Face directories the tests write themselves: sharded weights, dtypes, and
//! every kind of bad input a user can hand us.

mod common;

use adainfer::engine::synthetic::SyntheticSpec;
use adainfer::engine::Outputs;
use adainfer::hook::Probe;
use adainfer::{Engine, LoadOptions};
use std::path::{Path, PathBuf};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("adainfer-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn last_logits(engine: &Engine, prompt: &str) -> Vec<f32> {
    let ids = engine.encode(prompt).unwrap();
    let mut cache = engine.model.new_cache();
    let out = engine
        .model
        .forward(&ids, &mut cache, None, Outputs::LastToken)
        .unwrap();
    out.last_logits().unwrap()
}

fn load_err(dir: &Path) -> String {
    match Engine::load(dir, &LoadOptions::default()) {
        Ok(_) => panic!("{} should not load", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn sharded_weights_load_the_same_model() {
    let spec = SyntheticSpec::tiny(3);
    let (single, sharded) = (temp_dir("single"), temp_dir("sharded"));
    spec.write_dir(&single, &common::tokenizer(), 1).unwrap();
    spec.write_dir(&sharded, &common::tokenizer(), 3).unwrap();
    assert!(sharded.join("model.safetensors.index.json").is_file());
    assert!(sharded.join("model-00003-of-00003.safetensors").is_file());
    let a = Engine::load(&single, &LoadOptions::default()).unwrap();
    let b = Engine::load(&sharded, &LoadOptions::default()).unwrap();
    assert_eq!(
        last_logits(&a, "Q: hello\nA:"),
        last_logits(&b, "Q: hello\nA:")
    );
    assert_eq!(a.config().num_hidden_layers, 3);
    std::fs::remove_dir_all(single).unwrap();
    std::fs::remove_dir_all(sharded).unwrap();
}

#[test]
fn half_precision_dtypes_agree_with_f32_on_the_task_model() {
    let model = common::task_model();
    let f32_engine = Engine::load(&model, &LoadOptions::default()).unwrap();
    for dtype in ["bf16", "f16"] {
        let engine = Engine::load(&model, &LoadOptions::from_names(dtype, "cpu").unwrap()).unwrap();
        for prompt in [
            "Q: a gripping , funny and moving film .\nA:",
            "Q: dull and lifeless .\nA:",
        ] {
            let full = Probe::from_logits(None, last_logits(&f32_engine, prompt));
            let half = Probe::from_logits(None, last_logits(&engine, prompt));
            assert_eq!(full.top1(), half.top1(), "{dtype}: {prompt:?}");
            assert!((full.top_prob() - half.top_prob()).abs() < 0.05, "{dtype}");
        }
    }
}

/// A bf16 checkpoint under `--dtype auto` keeps its matrices in bf16 (multiplied with f32
/// activations); `--dtype f32` widens the same values. Both accumulate in f32, so they agree.
#[test]
fn bf16_files_run_their_matrices_in_bf16_like_widened_f32() {
    let source = common::shared().join("reference/random-gemma3");
    let dir = temp_dir("bf16-gemma3");
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(source.join(file), dir.join(file)).unwrap();
    }
    let tensors =
        candle_core::safetensors::load(source.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let half: std::collections::HashMap<String, candle_core::Tensor> = tensors
        .into_iter()
        .map(|(k, t)| (k, t.to_dtype(candle_core::DType::BF16).unwrap()))
        .collect();
    candle_core::safetensors::save(&half, dir.join("model.safetensors")).unwrap();
    let kept = Engine::load(&dir, &LoadOptions::default()).unwrap();
    let widened = Engine::load(&dir, &LoadOptions::from_names("f32", "cpu").unwrap()).unwrap();
    for prompt in ["Q: hello", "once upon a time there was a"] {
        let (a, b) = (last_logits(&kept, prompt), last_logits(&widened, prompt));
        let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
        let diff = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff < 1e-4 * scale, "{prompt:?}: {diff} of {scale}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn shape_mismatch_between_config_and_weights_names_the_tensor() {
    let dir = temp_dir("mismatch");
    SyntheticSpec::tiny(2)
        .write_dir(&dir, &common::tokenizer(), 1)
        .unwrap();
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        config.replace("\"intermediate_size\": 64", "\"intermediate_size\": 65"),
    )
    .unwrap();
    let e = load_err(&dir);
    assert!(e.contains("gate_proj.weight"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn missing_and_malformed_files_are_named() {
    let dir = temp_dir("broken");
    SyntheticSpec::tiny(2)
        .write_dir(&dir, &common::tokenizer(), 1)
        .unwrap();

    std::fs::write(dir.join("config.json"), "{not json").unwrap();
    let e = load_err(&dir);
    assert!(e.contains("config.json"), "{e}");

    std::fs::write(dir.join("config.json"), r#"{"model_type":"gpt2"}"#).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("config.json"), "{e}");

    SyntheticSpec::tiny(2)
        .write_dir(&dir, &common::tokenizer(), 1)
        .unwrap();
    std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
    let e = load_err(&dir);
    assert!(e.contains("tokenizer.json"), "{e}");

    SyntheticSpec::tiny(2)
        .write_dir(&dir, &common::tokenizer(), 1)
        .unwrap();
    std::fs::write(dir.join("model.safetensors"), b"garbage").unwrap();
    let e = load_err(&dir);
    assert!(e.contains("cannot read weights"), "{e}");

    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("model.safetensors"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn empty_and_overlong_prompts_are_refused() {
    let engine = Engine::load(&common::task_model(), &LoadOptions::default()).unwrap();
    let e = engine.encode("").unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
    let long = "word ".repeat(3000);
    let e = engine
        .generate_text(&long, 4, Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_position_embeddings"), "{e}");
}

#[test]
fn every_shared_model_generates_from_the_cli() {
    let mut models = common::reference_models();
    models.push(common::task_model());
    for dir in models {
        let dir = dir.to_str().unwrap();
        let prompt = "Q: hi\nA:";
        let args = [
            "generate",
            "--max-tokens",
            "3",
            "--prompt",
            prompt,
            "--model",
            dir,
        ];
        let (ok, _, err) = common::adainfer(&args);
        assert!(ok, "{dir}: {err}");
        let args = [
            "inspect", "--format", "json", "--prompt", prompt, "--model", dir,
        ];
        let doc = common::run_json(&args);
        let layers = doc["layers"].as_array().unwrap();
        assert_eq!(layers[0]["layer"], 1);
        assert_eq!(layers[0]["top_ids"].as_array().unwrap().len(), 5);
        assert_eq!(doc["final"]["top_ids"].as_array().unwrap().len(), 10);
    }
}

#[test]
fn cli_reports_bad_input_without_panicking() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_adainfer"))
        .args(["generate", "--model", "/nonexistent", "--prompt", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error:") && err.contains("/nonexistent"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
