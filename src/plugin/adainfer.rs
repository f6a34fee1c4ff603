//! The AdaInfer hook: probe → features → policy, behind the guards every policy honours.

use super::config::PluginConfig;
use super::features::{FeatureExtractor, FeatureRow};
use super::policy::{build_policy, ExitPolicy};
use crate::hook::{Decision, LayerHook, LayerView, PassInfo, SkipPlan};
use crate::Engine;
use anyhow::{bail, Context, Result};
use serde::Serialize;

/// What the hook has done so far, over every pass it saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ExitStats {
    pub policy: String,
    pub passes: u64,
    /// Entry k − 1: passes that ended after layer k (a pass that ran to the end counts at L;
    /// static skips are not exits). The oracle reports the layer it would have exited at.
    pub exits_per_layer: Vec<u64>,
    /// Blocks that ran, summed over passes.
    pub layers_run: u64,
    /// Layers whose features held a NaN: the policy was overruled and the pass continued.
    pub nan_fallbacks: u64,
    /// Exits the policy asked for but `min_layer` / `min_confidence` refused.
    pub guard_vetoes: u64,
}

impl ExitStats {
    /// Mean blocks run per pass.
    pub fn mean_layers(&self) -> f64 {
        if self.passes == 0 {
            0.0
        } else {
            self.layers_run as f64 / self.passes as f64
        }
    }
}

/// The plugin: a [`LayerHook`] to pass to `DecoderModel::forward`.
pub struct AdaInfer {
    features: FeatureExtractor,
    policy: Box<dyn ExitPolicy>,
    min_layer: usize,
    min_confidence: Option<f32>,
    num_layers: usize,
    stats: ExitStats,
}

impl AdaInfer {
    /// The config's active policy (`[policy] kind`).
    pub fn from_config(config: &PluginConfig, engine: &Engine) -> Result<Self> {
        Self::for_policy(config, engine, &config.policy.kind)
    }

    /// The same config with another policy kind (eval arms, per-request overrides).
    pub fn for_policy(config: &PluginConfig, engine: &Engine, kind: &str) -> Result<Self> {
        let features = config.feature_extractor(&engine.identity)?;
        if let Some(calibration) = &config.calibration {
            calibration
                .check(&engine.identity, &config.features, features.exit_heads())
                .with_context(|| format!("plugin config {}", config.source.display()))?;
        }
        let policy = build_policy(
            kind,
            config,
            engine,
            &features.names(),
            features.label_tokens(),
        )?;
        Self::new(
            features,
            policy,
            config.limits.min_layer,
            config.limits.min_confidence,
            engine.model.num_layers(),
        )
    }

    /// Assemble from parts (tests, library users with their own policy).
    pub fn new(
        features: FeatureExtractor,
        policy: Box<dyn ExitPolicy>,
        min_layer: usize,
        min_confidence: Option<f32>,
        num_layers: usize,
    ) -> Result<Self> {
        if min_layer > num_layers {
            bail!("min_layer = {min_layer} is beyond the model's {num_layers} layers");
        }
        if let Some(c) = min_confidence {
            if !(0.0..=1.0).contains(&c) {
                bail!("min_confidence must be within [0, 1], got {c}");
            }
        }
        let stats = ExitStats {
            policy: policy.name().to_string(),
            exits_per_layer: vec![0; num_layers],
            ..ExitStats::default()
        };
        Ok(Self {
            features,
            policy,
            min_layer,
            min_confidence,
            num_layers,
            stats,
        })
    }

    pub fn policy_name(&self) -> &str {
        self.policy.name()
    }

    pub fn stats(&self) -> &ExitStats {
        &self.stats
    }

    pub fn reset_stats(&mut self) {
        self.stats = ExitStats {
            policy: self.policy.name().to_string(),
            exits_per_layer: vec![0; self.num_layers],
            ..ExitStats::default()
        };
    }

    pub fn feature_names(&self) -> Vec<String> {
        self.features.names()
    }

    fn record_end(&mut self, layer: usize) {
        if let Some(slot) = self.stats.exits_per_layer.get_mut(layer - 1) {
            *slot += 1;
        }
    }
}

impl LayerHook for AdaInfer {
    fn name(&self) -> &str {
        self.policy.name()
    }

    fn begin_pass(&mut self, info: &PassInfo) -> Result<SkipPlan> {
        if info.num_layers != self.num_layers {
            bail!(
                "AdaInfer was built for {} layers, but this pass runs a model with {}",
                self.num_layers,
                info.num_layers
            );
        }
        self.stats.passes += 1;
        self.features.reset();
        self.policy.plan(info)
    }

    fn after_layer(&mut self, view: &mut LayerView<'_>) -> Result<Decision> {
        self.stats.layers_run += 1;
        if !self.policy.watches_layers() {
            return Ok(Decision::Continue);
        }
        let row = self.features.extract(view)?;
        let decision = self.judge(&row);
        if decision == Decision::Exit {
            if let Some(answer) = self.features.head_answer() {
                view.answer_with(answer);
            }
        }
        Ok(decision)
    }

    fn watches_layers(&self) -> bool {
        self.policy.watches_layers()
    }
}

impl AdaInfer {
    /// The policy's answer for one layer's features, with the guards applied and counted.
    pub fn judge(&mut self, row: &FeatureRow) -> Decision {
        let wanted = self.policy.decide(row);
        if row.layer >= row.num_layers {
            let end = self.policy.hindsight_exit().unwrap_or(row.layer);
            self.record_end(end);
            return Decision::Continue;
        }
        if row.has_nan() {
            self.stats.nan_fallbacks += 1;
            return Decision::Continue;
        }
        if wanted == Decision::Continue {
            return Decision::Continue;
        }
        let too_early = row.layer < self.min_layer;
        let unsure = self.min_confidence.is_some_and(|c| row.top_prob < c);
        if too_early || unsure {
            self.stats.guard_vetoes += 1;
            return Decision::Continue;
        }
        self.record_end(row.layer);
        Decision::Exit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::policy::{Signal, ThresholdRule};

    fn hook(min_layer: usize, min_confidence: Option<f32>) -> AdaInfer {
        let features = FeatureExtractor::new(&["gap".into(), "top_prob".into()], None).unwrap();
        let policy = Box::new(ThresholdRule::every(Signal::Gap, 0.5).unwrap());
        AdaInfer::new(features, policy, min_layer, min_confidence, 6).unwrap()
    }

    fn row(layer: usize, gap: f32, top_prob: f32) -> FeatureRow {
        FeatureRow {
            layer,
            num_layers: 6,
            values: vec![gap, top_prob],
            top1: 1,
            top_prob,
            gap,
        }
    }

    #[test]
    fn nan_features_continue_and_are_counted() {
        let mut h = hook(0, None);
        assert_eq!(h.judge(&row(2, 0.9, f32::NAN)), Decision::Continue);
        assert_eq!(h.judge(&row(3, f32::NAN, 0.9)), Decision::Continue);
        assert_eq!(h.stats().nan_fallbacks, 2);
        assert_eq!(h.judge(&row(4, 0.9, 0.95)), Decision::Exit);
        assert_eq!(h.stats().exits_per_layer, vec![0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn guards_veto_exits() {
        let mut h = hook(3, Some(0.9));
        assert_eq!(h.judge(&row(2, 0.9, 0.95)), Decision::Continue);
        assert_eq!(h.judge(&row(3, 0.6, 0.8)), Decision::Continue);
        assert_eq!(h.stats().guard_vetoes, 2);
        assert_eq!(h.judge(&row(3, 0.6, 0.9)), Decision::Exit);
    }

    #[test]
    fn min_layer_beyond_the_model_is_refused() {
        let features = FeatureExtractor::new(&["gap".into()], None).unwrap();
        let policy = Box::new(ThresholdRule::every(Signal::Gap, 0.5).unwrap());
        let err = AdaInfer::new(features, policy, 7, None, 6).err().unwrap();
        assert!(err.to_string().contains("min_layer = 7"), "{err}");
    }
}
