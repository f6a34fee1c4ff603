//! Input-dependent rules over the probe: the paper's gap rule, its top-prob twin, and dense.

use super::ExitPolicy;
use crate::hook::Decision;
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

/// The paper's rule (§4.1): exit once p(top1) − p(top2) ≥ θ.
pub struct GapThreshold {
    threshold: f32,
}

impl GapThreshold {
    pub fn new(threshold: f32) -> Result<Self> {
        Ok(Self {
            threshold: check_probability("gap_threshold", threshold)?,
        })
    }
}

impl ExitPolicy for GapThreshold {
    fn name(&self) -> &str {
        "gap_threshold"
    }

    fn decide(&mut self, row: &FeatureRow) -> Decision {
        if row.gap >= self.threshold {
            Decision::Exit
        } else {
            Decision::Continue
        }
    }
}

/// Exit once p(top1) ≥ θ.
pub struct TopProbThreshold {
    threshold: f32,
}

impl TopProbThreshold {
    pub fn new(threshold: f32) -> Result<Self> {
        Ok(Self {
            threshold: check_probability("top_prob_threshold", threshold)?,
        })
    }
}

impl ExitPolicy for TopProbThreshold {
    fn name(&self) -> &str {
        "top_prob_threshold"
    }

    fn decide(&mut self, row: &FeatureRow) -> Decision {
        if row.top_prob >= self.threshold {
            Decision::Exit
        } else {
            Decision::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(gap: f32, top_prob: f32) -> FeatureRow {
        FeatureRow {
            layer: 3,
            num_layers: 12,
            values: vec![gap, top_prob],
            top1: 7,
            top_prob,
            gap,
        }
    }

    #[test]
    fn thresholds_are_inclusive() {
        let mut g = GapThreshold::new(0.8).unwrap();
        assert_eq!(g.decide(&row(0.79, 0.9)), Decision::Continue);
        assert_eq!(g.decide(&row(0.8, 0.9)), Decision::Exit);
        let mut t = TopProbThreshold::new(0.9).unwrap();
        assert_eq!(t.decide(&row(0.85, 0.89)), Decision::Continue);
        assert_eq!(t.decide(&row(0.85, 0.95)), Decision::Exit);
        assert!(GapThreshold::new(1.5).is_err());
        assert!(TopProbThreshold::new(f32::NAN).is_err());
    }
}
