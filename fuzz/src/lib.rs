//! What the fuzz targets share: a scratch model directory per target holding the good files,
//! into which each input is written as the one file under test before the engine loads it.

use std::path::{Path, PathBuf};

/// `../shared`, beside the project.
pub fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

/// The project's root.
pub fn project() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fresh directory for `target` holding `files` copied from `model` (one per process, so
/// parallel fuzz jobs do not share one).
pub fn scratch(target: &str, model: &Path, files: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("adainfer-fuzz-{target}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the temp dir is writable");
    for f in files {
        std::fs::copy(model.join(f), dir.join(f)).expect("the reference model is readable");
    }
    dir
}

/// The model every safetensors / config input completes (small, with sliding windows and
/// soft-capping: the most fields to get wrong).
pub fn reference_model() -> PathBuf {
    shared().join("reference/random-gemma3")
}

/// Load whatever is at `path`; an `Err` is the right answer to a bad file, a panic or abort is
/// the bug libFuzzer reports.
pub fn load(path: &Path) {
    let _ = adainfer::Engine::load(path, &adainfer::LoadOptions::default());
}
