//! AdaInfer as a library: load a model from a plugin config, build the hook, run a pass.
//!
//! ```bash
//! cargo run --example embed -- plugin-configs/tiny-llama-sst2-agnews-gap_threshold.toml \
//!     $'Q: a gripping , funny and moving film .\nA:' policy.threshold=0.9
//! ```
//! Arguments: config file, prompt, then any number of `section.key=value` overrides.

use adainfer::engine::Outputs;
use adainfer::hook::Probe;
use adainfer::plugin::{load_engine, AdaInfer, PluginConfig};
use anyhow::{Context, Result};
use std::path::PathBuf;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let config_path: PathBuf = args
        .next()
        .context("usage: embed CONFIG PROMPT [KEY=VALUE…]")?
        .into();
    let prompt = args
        .next()
        .context("usage: embed CONFIG PROMPT [KEY=VALUE…]")?;
    let overrides: Vec<String> = args.collect();

    let config = PluginConfig::load(&config_path, &overrides)?;
    let engine = load_engine(&config, None)?;
    let mut hook = AdaInfer::from_config(&config, &engine)?;

    let ids = engine.encode(&prompt)?;
    let mut cache = engine.model.new_cache();
    let pass = engine
        .model
        .forward(&ids, &mut cache, Some(&mut hook), Outputs::LastToken)?;
    let answer = Probe::from_logits(None, pass.last_logits()?).top1();

    let layers = engine.model.num_layers();
    match &pass.exit {
        Some(exit) => println!(
            "{} exited after layer {} of {layers}",
            exit.hook, exit.layer
        ),
        None => println!(
            "{} ran {} of {layers} layers",
            hook.policy_name(),
            pass.layers_run
        ),
    }
    println!("answer: {:?}", engine.decode(&[answer])?);
    println!("stats: {}", serde_json::to_string(hook.stats())?);
    Ok(())
}
