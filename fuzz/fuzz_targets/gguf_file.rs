//! A GGUF file: header, metadata, tensor table, tensor data, tokenizer — all of `Engine::load`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let dir = DIR.get_or_init(|| adainfer_fuzz::scratch("gguf", &adainfer_fuzz::shared(), &[]));
    let path = dir.join("model.gguf");
    std::fs::write(&path, data).expect("the scratch dir is writable");
    adainfer_fuzz::load(&path);
});
