//! Paths to `../shared`, which sits beside the repository (read-only).
#![allow(dead_code)]

use std::path::PathBuf;

pub fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

pub fn reference_models() -> Vec<PathBuf> {
    [
        "random-llama",
        "random-llama3-rope",
        "random-mistral",
        "random-qwen2",
    ]
    .iter()
    .map(|m| shared().join("reference").join(m))
    .collect()
}

pub fn task_model() -> PathBuf {
    shared().join("models/tiny-llama-sst2-agnews")
}

pub fn tokenizer() -> PathBuf {
    shared().join("reference/random-llama/tokenizer.json")
}
