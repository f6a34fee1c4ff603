//! Exit policies: one small type per rule behind [`ExitPolicy`].
//!
//! Dynamic policies read each layer's [`FeatureRow`] and answer continue or exit; static ones
//! (`shortgpt`, `unified_skip`) decide before the pass which blocks to leave out. The guards
//! (`min_layer`, `min_confidence`, NaN fallback) live in [`super::AdaInfer`], so every policy
//! honours them the same way.

mod classifier_policy;
mod oracle;
mod static_skip;
mod threshold;

pub use classifier_policy::ClassifierPolicy;
pub use oracle::{oracle_exit_layer, Oracle};
pub use static_skip::{
    block_influence, shortgpt_drop_last, unified_skip_count, unified_skip_layers, StaticSkip,
};
pub use threshold::{Dense, Signal, ThresholdRule, Thresholds};

use super::config::PluginConfig;
use super::features::FeatureRow;
use crate::hook::{Decision, PassInfo, SkipPlan};
use crate::Engine;
use anyhow::{bail, Context, Result};

pub const POLICY_KINDS: [&str; 9] = [
    "dense",
    "gap_threshold",
    "top_prob_threshold",
    "svm",
    "logistic",
    "crf",
    "shortgpt",
    "unified_skip",
    "oracle",
];

pub trait ExitPolicy: Send {
    fn name(&self) -> &str;

    /// Blocks to leave out of the coming pass (static policies).
    fn plan(&mut self, _info: &PassInfo) -> Result<SkipPlan> {
        Ok(SkipPlan::none())
    }

    /// Whether [`ExitPolicy::decide`] wants feature rows (static policies skip the probe).
    fn watches_layers(&self) -> bool {
        true
    }

    /// Exit after this layer? Called for every layer that ran, the guards applied afterwards.
    fn decide(&mut self, row: &FeatureRow) -> Decision;

    /// For analysis-only policies: the layer the pass *would* have exited at, known once the
    /// last layer has been seen (the oracle).
    fn hindsight_exit(&self) -> Option<usize> {
        None
    }
}

/// Build the policy `kind` from `config` (classifier files are checked against `engine` and
/// against the config's feature list).
pub fn build_policy(
    kind: &str,
    config: &PluginConfig,
    engine: &Engine,
    feature_names: &[String],
    label_tokens: Option<&[u32]>,
) -> Result<Box<dyn ExitPolicy>> {
    let p = &config.policy;
    let source = config.source.display();
    Ok(match kind {
        "dense" => Box::new(Dense),
        "gap_threshold" | "top_prob_threshold" => {
            let (signal, params) = if kind == "gap_threshold" {
                (Signal::Gap, &p.gap_threshold)
            } else {
                (Signal::TopProb, &p.top_prob_threshold)
            };
            let thresholds = Thresholds::from_params(kind, params, engine.model.num_layers())
                .with_context(|| format!("[policy.{kind}] in {source}"))?;
            Box::new(ThresholdRule::new(signal, thresholds))
        }
        "svm" | "logistic" | "crf" => {
            let Some(Some(params)) = p.classifier(kind) else {
                bail!("policy {kind} needs [policy.{kind}] classifier = \"FILE\" in {source}");
            };
            Box::new(ClassifierPolicy::load(
                kind,
                params,
                engine,
                feature_names,
                label_tokens,
            )?)
        }
        "shortgpt" => Box::new(StaticSkip::shortgpt(&p.shortgpt, engine)?),
        "unified_skip" => Box::new(StaticSkip::unified(
            p.unified_skip.target_speedup,
            engine.model.num_layers(),
        )?),
        "oracle" => Box::new(Oracle::default()),
        _ => bail!(
            "unknown policy kind {kind:?}; valid kinds: {}",
            POLICY_KINDS.join(", ")
        ),
    })
}
