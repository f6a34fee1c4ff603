//! `config.json` of an otherwise good model directory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let dir = DIR.get_or_init(|| {
        let model = adainfer_fuzz::reference_model();
        adainfer_fuzz::scratch("config", &model, &["model.safetensors", "tokenizer.json"])
    });
    std::fs::write(dir.join("config.json"), data).expect("the scratch dir is writable");
    adainfer_fuzz::load(dir);
});
