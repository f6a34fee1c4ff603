//! A plugin config (TOML) built into an AdaInfer hook on the vendored model; its classifier
//! paths point at the shipped classifier files.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

struct Fixture {
    dir: std::path::PathBuf,
    engine: adainfer::Engine,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let fixture = FIXTURE.get_or_init(|| {
        let model = adainfer_fuzz::shared().join("models/tiny-llama-sst2-agnews");
        let engine = adainfer::Engine::load(&model, &adainfer::LoadOptions::default())
            .expect("the vendored model loads");
        let dir = adainfer_fuzz::scratch("plugin", &model, &[]);
        Fixture { dir, engine }
    });
    let path = fixture.dir.join("config.toml");
    std::fs::write(&path, data).expect("the scratch dir is writable");
    if let Ok(config) = adainfer::plugin::PluginConfig::load(&path, &[]) {
        let _ = adainfer::plugin::AdaInfer::from_config(&config, &fixture.engine);
    }
});
