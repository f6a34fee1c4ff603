//! Threshold sweeps: the accuracy-vs-pruning curve, and calibration to a user's budget.
//!
//! Every point re-runs the real AdaInfer hook with `[policy.<kind>] threshold` set to one value
//! (so classifiers and guards behave exactly as in production), on prompts whose dense answers
//! were computed once.

use super::ab::{self, AbRun, CaseOutcome};
use super::arms::plugin_arm;
use super::metrics::FlopsModel;
use super::report;
use super::run::Prepared;
use crate::engine::Engine;
use crate::plugin::PluginConfig;
use anyhow::{bail, Result};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    pub threshold: f64,
    pub accuracy: f64,
    pub avg_layers: f64,
    pub pruning_ratio: f64,
    pub flops_ratio: f64,
    pub agreement_with_dense: f64,
    /// Prompts whose answer differed from dense, of `prompts`.
    pub disagreements: usize,
    pub prompts: usize,
}

/// Thresholds tried when the user gives none: probability-like for the threshold rules,
/// logistic and CRF, decision values around 0 for the SVM.
pub fn default_thresholds(kind: &str) -> Result<Vec<f64>> {
    Ok(match kind {
        "gap_threshold" | "top_prob_threshold" | "logistic" | "crf" => {
            let mut v: Vec<f64> = (1..=19).map(|i| (5 * i) as f64 / 100.0).collect();
            v.push(0.99);
            v
        }
        "svm" => (-8..=8).map(|i| i as f64 / 4.0).collect(),
        other => bail!("policy {other:?} has no threshold to sweep (threshold kinds: gap_threshold, top_prob_threshold, svm, logistic, crf)"),
    })
}

/// `config` with the active policy's threshold set to `value`.
pub fn with_threshold(config: &PluginConfig, value: f64) -> Result<PluginConfig> {
    let mut c = config.clone();
    let p = &mut c.policy;
    let kind = p.kind.clone();
    if let Some(thresholds) = p.thresholds_mut(&kind) {
        thresholds.threshold = value as f32;
        return Ok(c);
    }
    match p.classifier_mut(&kind) {
        Some(params) => match params {
            Some(params) => params.threshold = Some(value),
            None => bail!(
                "policy {kind} needs [policy.{kind}] classifier = \"FILE\" in {}",
                c.source.display()
            ),
        },
        None => bail!("policy {kind:?} has no threshold to calibrate"),
    }
    Ok(c)
}

/// Run the config's policy at every threshold; `dense` are the dense outcomes of `prepared`.
pub fn sweep(
    engine: &Engine,
    config: &PluginConfig,
    prepared: &Prepared,
    dense: &[CaseOutcome],
    thresholds: &[f64],
    mut on_point: impl FnMut(&SweepPoint),
) -> Result<Vec<SweepPoint>> {
    let flops = FlopsModel::of(engine.config());
    let mut points = Vec::new();
    for &threshold in thresholds {
        let tuned = with_threshold(config, threshold)?;
        let mut arms = [plugin_arm("adaptive", &tuned.policy.kind, &tuned, engine)?];
        let run = ab::run_arms(
            engine,
            &mut arms,
            &prepared.cases,
            &prepared.scoring,
            prepared.generation.as_ref(),
            || {},
        )?;
        let adaptive = run.outcomes.into_iter().next().unwrap_or_default();
        let disagreements = adaptive
            .iter()
            .zip(dense)
            .filter(|(a, d)| a.answer != d.answer)
            .count();
        let both = AbRun {
            arm_names: vec!["dense".into(), "adaptive".into()],
            outcomes: vec![dense.to_vec(), adaptive],
        };
        let summary = report::summarise(&both, &prepared.cases, &flops);
        let r = &summary[1].1;
        let point = SweepPoint {
            threshold,
            accuracy: r.accuracy,
            avg_layers: r.avg_layers,
            pruning_ratio: r.pruning_ratio,
            flops_ratio: r.flops_ratio,
            agreement_with_dense: r.agreement_with_dense.unwrap_or(0.0),
            disagreements,
            prompts: dense.len(),
        };
        on_point(&point);
        points.push(point);
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_policies_have_no_threshold() {
        assert!(default_thresholds("unified_skip").is_err());
        assert_eq!(default_thresholds("svm").unwrap().len(), 17);
    }
}
