//! Input-dependent rules over the probe: the paper's gap rule, its top-prob twin, and dense.
//! Both threshold rules take one θ for every block or one per block (what calibration with
//! per-layer risks writes).

use super::ExitPolicy;
use crate::hook::Decision;
use crate::plugin::config::ThresholdParams;
use crate::plugin::features::FeatureRow;
use anyhow::{bail, Result};

/// Never exits: the A arm of every comparison.
pub struct Dense;

impl ExitPolicy for Dense {
    fn name(&self) -> &str {
        "dense"
    }

    fn watches_layers(&self) -> bool {
        false
    }

    fn decide(&mut self, _row: &FeatureRow) -> Decision {
        Decision::Continue
    }
}

fn check_probability(name: &str, threshold: f32) -> Result<f32> {
    if !(0.0..=1.0).contains(&threshold) {
        bail!("{name} threshold must be within [0, 1], got {threshold}");
    }
    Ok(threshold)
}

/// The threshold at each block: the same everywhere, or only at the blocks a list names.
#[derive(Debug, Clone, PartialEq)]
pub enum Thresholds {
    Every(f32),
    /// Index = block − 1; `None`: never exit after that block.
    PerLayer(Vec<Option<f32>>),
}

impl Thresholds {
    /// `num_layers`: the model's, so a list made for a deeper model is refused by name.
    pub fn from_params(kind: &str, params: &ThresholdParams, num_layers: usize) -> Result<Self> {
        if params.per_layer.is_empty() {
            return Ok(Self::Every(check_probability(kind, params.threshold)?));
        }
        let mut at = vec![None; num_layers];
        for entry in &params.per_layer {
            let name = format!("{kind} per_layer (layer {})", entry.layer);
            if entry.layer == 0 || entry.layer > num_layers {
                bail!("{name}: layers are counted from 1 to the model's {num_layers}");
            }
            let slot = &mut at[entry.layer - 1];
            if slot.is_some() {
                bail!("{name}: the layer is listed twice");
            }
            *slot = Some(check_probability(&name, entry.threshold)?);
        }
        Ok(Self::PerLayer(at))
    }

    pub fn at(&self, layer: usize) -> Option<f32> {
        match self {
            Self::Every(t) => Some(*t),
            Self::PerLayer(at) => at.get(layer.wrapping_sub(1)).copied().flatten(),
        }
    }
}

/// Which probe value a threshold rule compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// The paper's rule (§4.1): exit once p(top1) − p(top2) ≥ θ.
    Gap,
    /// Exit once p(top1) ≥ θ.
    TopProb,
}

impl Signal {
    /// This signal's value in `row`.
    pub fn of(self, row: &FeatureRow) -> f32 {
        match self {
            Signal::Gap => row.gap,
            Signal::TopProb => row.top_prob,
        }
    }
}

/// A threshold rule: exit after the first block whose signal reaches that block's threshold.
pub struct ThresholdRule {
    signal: Signal,
    thresholds: Thresholds,
}

impl ThresholdRule {
    pub fn new(signal: Signal, thresholds: Thresholds) -> Self {
        Self { signal, thresholds }
    }

    /// One threshold for every block.
    pub fn every(signal: Signal, threshold: f32) -> Result<Self> {
        let kind = Self::kind(signal);
        Ok(Self::new(
            signal,
            Thresholds::Every(check_probability(kind, threshold)?),
        ))
    }

    fn kind(signal: Signal) -> &'static str {
        match signal {
            Signal::Gap => "gap_threshold",
            Signal::TopProb => "top_prob_threshold",
        }
    }
}

impl ExitPolicy for ThresholdRule {
    fn name(&self) -> &str {
        Self::kind(self.signal)
    }

    fn decide(&mut self, row: &FeatureRow) -> Decision {
        match self.thresholds.at(row.layer) {
            Some(t) if self.signal.of(row) >= t => Decision::Exit,
            _ => Decision::Continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::config::LayerThreshold;

    fn row(layer: usize, gap: f32, top_prob: f32) -> FeatureRow {
        FeatureRow {
            layer,
            num_layers: 12,
            values: vec![gap, top_prob],
            top1: 7,
            top_prob,
            gap,
        }
    }

    #[test]
    fn thresholds_are_inclusive() {
        let mut g = ThresholdRule::every(Signal::Gap, 0.8).unwrap();
        assert_eq!(g.decide(&row(3, 0.79, 0.9)), Decision::Continue);
        assert_eq!(g.decide(&row(3, 0.8, 0.9)), Decision::Exit);
        let mut t = ThresholdRule::every(Signal::TopProb, 0.9).unwrap();
        assert_eq!(t.decide(&row(3, 0.85, 0.89)), Decision::Continue);
        assert_eq!(t.decide(&row(3, 0.85, 0.95)), Decision::Exit);
        assert!(ThresholdRule::every(Signal::Gap, 1.5).is_err());
        assert!(ThresholdRule::every(Signal::TopProb, f32::NAN).is_err());
    }

    fn per_layer(entries: &[(usize, f32)]) -> ThresholdParams {
        ThresholdParams {
            threshold: 0.0,
            per_layer: entries
                .iter()
                .map(|&(layer, threshold)| LayerThreshold { layer, threshold })
                .collect(),
        }
    }

    #[test]
    fn per_layer_thresholds_exit_only_where_named() {
        let t = Thresholds::from_params("gap_threshold", &per_layer(&[(4, 0.6), (2, 0.9)]), 12)
            .unwrap();
        let mut g = ThresholdRule::new(Signal::Gap, t);
        // Layer 1 is not named: even a certain probe does not exit there (the global 0.0 is unused).
        assert_eq!(g.decide(&row(1, 1.0, 1.0)), Decision::Continue);
        assert_eq!(g.decide(&row(2, 0.89, 0.9)), Decision::Continue);
        assert_eq!(g.decide(&row(2, 0.9, 0.9)), Decision::Exit);
        assert_eq!(g.decide(&row(3, 1.0, 1.0)), Decision::Continue);
        assert_eq!(g.decide(&row(4, 0.6, 0.7)), Decision::Exit);
    }

    #[test]
    fn per_layer_lists_for_another_depth_or_twice_named_are_refused() {
        let msg = |e: anyhow::Error| e.to_string();
        let deep = Thresholds::from_params("gap_threshold", &per_layer(&[(30, 0.5)]), 12);
        assert!(
            msg(deep.unwrap_err()).contains("layer 30"),
            "names the layer"
        );
        let zero = Thresholds::from_params("gap_threshold", &per_layer(&[(0, 0.5)]), 12);
        assert!(zero.is_err());
        let twice = Thresholds::from_params("gap_threshold", &per_layer(&[(3, 0.5), (3, 0.6)]), 12);
        assert!(msg(twice.unwrap_err()).contains("twice"));
        let bad = Thresholds::from_params("top_prob_threshold", &per_layer(&[(3, 1.5)]), 12);
        assert!(msg(bad.unwrap_err()).contains("within [0, 1]"));
    }
}
