//! Write the seed corpus libFuzzer starts from: `corpus/<target>/` with the good files.
//! `cargo run --bin seeds` from `fuzz/` (scripts/fuzz.sh does it).

use adainfer_fuzz::{project, reference_model, shared};
use candle_core::quantized::GgmlDType;
use std::path::Path;

fn main() -> std::io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let dir = |target: &str| {
        let d = corpus.join(target);
        std::fs::create_dir_all(&d).map(|_| d)
    };
    // GGUF: the small Qwen2 and Llama reference models, as Q4_0 and Q8_0 files.
    let gguf = dir("gguf_file")?;
    for (model, dtype, name) in [
        ("random-qwen2", GgmlDType::Q4_0, "qwen2-q4_0.gguf"),
        ("random-llama", GgmlDType::Q8_0, "llama-q8_0.gguf"),
    ] {
        let src = shared().join("reference").join(model);
        adainfer::engine::gguf::writer::write_hf_dir_as_gguf(&src, &gguf.join(name), dtype)
            .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    }
    std::fs::copy(
        reference_model().join("model.safetensors"),
        dir("safetensors_file")?.join("gemma3.safetensors"),
    )?;
    let config = dir("model_config")?;
    for model in ["random-gemma3", "random-llama", "random-opt", "random-gptj"] {
        let src = shared().join("reference").join(model).join("config.json");
        std::fs::copy(src, config.join(format!("{model}.json")))?;
    }
    // Plugin configs, pointed at the vendored model and the shipped classifiers by absolute path.
    let plugin = dir("plugin_config")?;
    let shipped = project().join("plugin-configs");
    let model = shared().join("models/tiny-llama-sst2-agnews");
    for entry in std::fs::read_dir(&shipped)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if !name.starts_with("tiny-llama") || !name.ends_with(".toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let text: Vec<String> = text
            .lines()
            .map(|l| match l.split_once(" = ") {
                Some(("path", _)) => format!("path = {:?}", model.display().to_string()),
                Some((key, value)) if value.contains("classifiers/") => {
                    let rel = value.trim_matches('"');
                    format!("{key} = {:?}", shipped.join(rel).display().to_string())
                }
                _ => l.to_string(),
            })
            .collect();
        std::fs::write(plugin.join(name), text.join("\n"))?;
    }
    println!("seed corpus written under {}", corpus.display());
    Ok(())
}
