//! Paths to `../shared`, which sits beside the repository (read-only).
#![allow(dead_code)]

pub mod reference;

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
        "random-gemma3",
        "random-opt",
        "random-gptj",
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

/// Run the `adainfer` binary from the repository root: (success, stdout, stderr).
pub fn adainfer(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_adainfer"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run adainfer");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run `adainfer` with `args`, require success, and parse what it prints as JSON.
pub fn run_json(args: &[&str]) -> serde_json::Value {
    let (ok, out, err) = adainfer(args);
    assert!(ok, "adainfer {} failed: {err}", args.join(" "));
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("adainfer {} printed no JSON ({e}): {out}", args.join(" ")))
}
