//! `model.safetensors` of an otherwise good model directory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let dir = DIR.get_or_init(|| {
        let model = adainfer_fuzz::reference_model();
        adainfer_fuzz::scratch("safetensors", &model, &["config.json", "tokenizer.json"])
    });
    std::fs::write(dir.join("model.safetensors"), data).expect("the scratch dir is writable");
    adainfer_fuzz::load(dir);
});
