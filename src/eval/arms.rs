//! Arms by name, as `--arms` lists them: `dense`, `oracle`, `adaptive` (the config's active
//! policy) and any policy kind of the plugin (`shortgpt`, `unified_skip`, `gap_threshold`, …),
//! built from the same plugin config so every arm shares its features and limits.

use super::ab::Arm;
use crate::engine::Engine;
use crate::plugin::policy::POLICY_KINDS;
use crate::plugin::{AdaInfer, PluginConfig};
use anyhow::{bail, Context, Result};

/// Policies that plan skips before the pass and never probe the LM head.
const STATIC_KINDS: [&str; 3] = ["dense", "shortgpt", "unified_skip"];

/// The AdaInfer hook for policy `kind` as an arm called `name`.
pub fn plugin_arm(name: &str, kind: &str, config: &PluginConfig, engine: &Engine) -> Result<Arm> {
    let hook = AdaInfer::for_policy(config, engine, kind)
        .with_context(|| format!("arm {name} (policy {kind})"))?;
    let probes = usize::from(!STATIC_KINDS.contains(&kind));
    let width = config
        .features
        .label_tokens
        .as_ref()
        .map_or(engine.config().vocab_size, Vec::len);
    Ok(Arm::hook(name, Some(Box::new(hook)), probes, width))
}

/// Stock mistral.rs, dense, on the engine's own model directory.
#[cfg(feature = "mistralrs")]
fn mistralrs_arm(engine: &Engine) -> Result<Arm> {
    let options = crate::mistralrs::StockOptions::default();
    let stock = crate::mistralrs::StockMistralRs::load(engine.source.path(), &options)
        .context("arm mistralrs")?;
    Ok(Arm::external("mistralrs", Box::new(stock)))
}

#[cfg(not(feature = "mistralrs"))]
fn mistralrs_arm(_engine: &Engine) -> Result<Arm> {
    bail!("arm \"mistralrs\" needs a build with the mistralrs feature (cargo build --features mistralrs)")
}

/// Parse a comma-separated arm list. Plugin arms need `config`.
pub fn build_arms(list: &str, config: Option<&PluginConfig>, engine: &Engine) -> Result<Vec<Arm>> {
    let mut arms: Vec<Arm> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if arms.iter().any(|a| a.name == name) {
            bail!("arm {name:?} is listed twice in --arms");
        }
        let kind = match name {
            "dense" => {
                arms.push(Arm::dense());
                continue;
            }
            "oracle" => {
                arms.push(Arm::oracle());
                continue;
            }
            "mistralrs" => {
                arms.push(mistralrs_arm(engine)?);
                continue;
            }
            "adaptive" => config.map(|c| c.policy.kind.as_str()),
            kind if POLICY_KINDS.contains(&kind) => Some(kind),
            other => bail!(
                "unknown arm {other:?} in --arms (expected dense, oracle, adaptive, mistralrs or a policy kind: {})",
                POLICY_KINDS.join(", ")
            ),
        };
        let Some(config) = config else {
            bail!("arm {name:?} needs a plugin config (--config FILE)");
        };
        let kind = kind.unwrap_or(&config.policy.kind);
        arms.push(plugin_arm(name, kind, config, engine)?);
    }
    if arms.is_empty() {
        bail!("--arms names no arm");
    }
    Ok(arms)
}
