//! Per-layer features of the last token, read from a [`LayerView`].
//!
//! - `gap`, `top_prob`, `entropy`: from the LM-head probe (over `label_tokens` when given), or
//!   from a learned exit head's scores where the extractor has [`ExitHeads`] for that block.
//! - `cos_hidden`: cosine of this layer's output with its input, i.e. with the previous layer's
//!   hidden state (layer 1 compares with the embedding). `1 − cos_hidden` is ShortGPT's Block
//!   Influence.
//! - `cos_attn`, `cos_mlp`: cosine of this layer's attention / MLP output with the previous
//!   layer that ran. Layer 1 has none and gets 0.
//!
//! - `depth`: layer / number of layers.
//! - `top1_streak`: how many consecutive blocks that ran (this one included) the probe's top-1
//!   has stayed the same.
//! - `probe_shift`: total-variation distance between this block's probe distribution and the
//!   previous block's (0 at layer 1): how much the (label) distribution still moves.
//!
//! A zero vector makes a cosine NaN; policies treat any NaN feature as "continue".

use super::exit_heads::ExitHeads;
use crate::hook::{ExitAnswer, LayerView, Probe};
use anyhow::{bail, Result};
use std::sync::Arc;

pub const FEATURE_NAMES: [&str; 9] = [
    "gap",
    "top_prob",
    "cos_hidden",
    "cos_attn",
    "cos_mlp",
    "entropy",
    "depth",
    "top1_streak",
    "probe_shift",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    Gap,
    TopProb,
    CosHidden,
    CosAttn,
    CosMlp,
    Entropy,
    Depth,
    Top1Streak,
    ProbeShift,
}

impl Feature {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "gap" => Self::Gap,
            "top_prob" => Self::TopProb,
            "cos_hidden" => Self::CosHidden,
            "cos_attn" => Self::CosAttn,
            "cos_mlp" => Self::CosMlp,
            "entropy" => Self::Entropy,
            "depth" => Self::Depth,
            "top1_streak" => Self::Top1Streak,
            "probe_shift" => Self::ProbeShift,
            _ => bail!(
                "unknown feature {name:?}; valid features: {}",
                FEATURE_NAMES.join(", ")
            ),
        })
    }

    pub fn name(self) -> &'static str {
        FEATURE_NAMES[self as usize]
    }
}

/// One layer's features, plus the probe summary every policy may use.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRow {
    /// Counted from 1.
    pub layer: usize,
    pub num_layers: usize,
    /// The selected features, in the extractor's order.
    pub values: Vec<f32>,
    pub top1: u32,
    pub top_prob: f32,
    pub gap: f32,
}

impl FeatureRow {
    pub fn has_nan(&self) -> bool {
        self.values.iter().any(|v| v.is_nan()) || self.top_prob.is_nan() || self.gap.is_nan()
    }
}

/// Turns layer views into feature rows. Keeps the previous layer's branch outputs for the
/// cosine features, so call [`FeatureExtractor::reset`] before each pass.
#[derive(Debug, Clone)]
pub struct FeatureExtractor {
    features: Vec<Feature>,
    label_tokens: Option<Vec<u32>>,
    previous_attn: Option<Vec<f32>>,
    previous_mlp: Option<Vec<f32>>,
    /// The previous block's probe: top-1, its streak, its distribution.
    previous_top1: Option<u32>,
    streak: usize,
    previous_probs: Option<Vec<f32>>,
    heads: Option<Arc<ExitHeads>>,
    /// The exit head's distribution at the last extracted block, if it has a head there.
    head_probe: Option<Probe>,
}

impl FeatureExtractor {
    pub fn new(names: &[String], label_tokens: Option<Vec<u32>>) -> Result<Self> {
        if names.is_empty() {
            bail!(
                "no features selected; valid features: {}",
                FEATURE_NAMES.join(", ")
            );
        }
        let features = names
            .iter()
            .map(|n| Feature::parse(n))
            .collect::<Result<Vec<_>>>()?;
        if matches!(&label_tokens, Some(ids) if ids.is_empty()) {
            bail!("label_tokens is empty: list the answer token ids, or leave it out");
        }
        Ok(Self {
            features,
            label_tokens,
            previous_attn: None,
            previous_mlp: None,
            previous_top1: None,
            streak: 0,
            previous_probs: None,
            heads: None,
            head_probe: None,
        })
    }

    /// Read the probe features from `heads` where they have a head (they must score this
    /// extractor's label tokens).
    pub fn with_exit_heads(mut self, heads: Arc<ExitHeads>) -> Result<Self> {
        if self.label_tokens.as_deref() != Some(heads.label_tokens.as_slice()) {
            bail!(
                "exit heads score label_tokens = {:?}, but the features read label_tokens = {:?}",
                heads.label_tokens,
                self.label_tokens
            );
        }
        self.heads = Some(heads);
        Ok(self)
    }

    /// The exit heads the features read, if any.
    pub fn exit_heads(&self) -> Option<&ExitHeads> {
        self.heads.as_deref()
    }

    /// The exit head's distribution after the block last extracted (`None` where there is no
    /// head: the LM head answers there).
    pub fn head_probe(&self) -> Option<&Probe> {
        self.head_probe.as_ref()
    }

    /// [`Self::head_probe`] as the answer a hook gives at its exit.
    pub fn head_answer(&self) -> Option<ExitAnswer> {
        let probe = self.head_probe.as_ref()?;
        Some(ExitAnswer {
            ids: probe.ids()?.to_vec(),
            logits: probe.logits().to_vec(),
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.features.iter().map(|f| f.name().to_string()).collect()
    }

    pub fn label_tokens(&self) -> Option<&[u32]> {
        self.label_tokens.as_deref()
    }

    pub fn reset(&mut self) {
        self.previous_attn = None;
        self.previous_mlp = None;
        self.previous_top1 = None;
        self.streak = 0;
        self.previous_probs = None;
        self.head_probe = None;
    }

    pub fn extract(&mut self, view: &mut LayerView<'_>) -> Result<FeatureRow> {
        let wants = |f: Feature| self.features.contains(&f);
        let cos_hidden = if wants(Feature::CosHidden) {
            cosine(
                &LayerView::last_token(view.hidden)?,
                &LayerView::last_token(view.input)?,
            )
        } else {
            0.0
        };
        let cos_attn = if wants(Feature::CosAttn) {
            let now = LayerView::last_token(view.attn_out)?;
            let c = self.previous_attn.as_ref().map_or(0.0, |p| cosine(&now, p));
            self.previous_attn = Some(now);
            c
        } else {
            0.0
        };
        let cos_mlp = if wants(Feature::CosMlp) {
            let now = LayerView::last_token(view.mlp_out)?;
            let c = self.previous_mlp.as_ref().map_or(0.0, |p| cosine(&now, p));
            self.previous_mlp = Some(now);
            c
        } else {
            0.0
        };
        let (layer, num_layers) = (view.number(), view.num_layers);
        self.head_probe = match &self.heads {
            Some(heads) => heads
                .answer(layer, &LayerView::last_token(view.hidden)?)
                .map(|a| Probe::from_logits(Some(a.ids), a.logits)),
            None => None,
        };
        let probe = match (&self.head_probe, &self.label_tokens) {
            (Some(p), _) => p,
            (None, Some(ids)) => view.probe_tokens(ids)?,
            (None, None) => view.probe()?,
        };
        let top1 = probe.top1();
        self.streak = match self.previous_top1 {
            Some(t) if t == top1 => self.streak + 1,
            _ => 1,
        };
        self.previous_top1 = Some(top1);
        let probe_shift = if self.features.contains(&Feature::ProbeShift) {
            let shift = self
                .previous_probs
                .as_ref()
                .map_or(0.0, |p| total_variation(p, probe.probs()));
            self.previous_probs = Some(probe.probs().to_vec());
            shift
        } else {
            0.0
        };
        let streak = self.streak as f32;
        let values = self
            .features
            .iter()
            .map(|f| match f {
                Feature::Gap => probe.gap(),
                Feature::TopProb => probe.top_prob(),
                Feature::Entropy => probe.entropy(),
                Feature::CosHidden => cos_hidden,
                Feature::CosAttn => cos_attn,
                Feature::CosMlp => cos_mlp,
                Feature::Depth => layer as f32 / num_layers as f32,
                Feature::Top1Streak => streak,
                Feature::ProbeShift => probe_shift,
            })
            .collect();
        Ok(FeatureRow {
            layer,
            num_layers,
            values,
            top1: probe.top1(),
            top_prob: probe.top_prob(),
            gap: probe.gap(),
        })
    }
}

/// ½ Σ |p − q|: how far one distribution moved to become the other (0 … 1).
pub fn total_variation(p: &[f32], q: &[f32]) -> f32 {
    0.5 * p.iter().zip(q).map(|(a, b)| (a - b).abs()).sum::<f32>()
}

/// Cosine similarity; NaN when either vector is zero.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        dot += x as f64 * y as f64;
        na += x as f64 * x as f64;
        nb += y as f64 * y as f64;
    }
    (dot / (na.sqrt() * nb.sqrt())) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_feature_lists_the_valid_ones() {
        let err = FeatureExtractor::new(&["gap".into(), "gapp".into()], None).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("\"gapp\"") && msg.contains("cos_mlp"), "{msg}");
        assert!(FeatureExtractor::new(&[], None).is_err());
        assert!(FeatureExtractor::new(&["gap".into()], Some(vec![])).is_err());
    }

    #[test]
    fn names_round_trip() {
        for name in FEATURE_NAMES {
            assert_eq!(Feature::parse(name).unwrap().name(), name);
        }
    }

    /// Every layer of a pass through a small model, with the layer-aware features.
    fn rows_of_one_pass(names: &[&str]) -> Vec<FeatureRow> {
        use crate::engine::synthetic::SyntheticSpec;
        use crate::engine::Outputs;
        use crate::hook::{Decision, LayerHook};
        struct Record(FeatureExtractor, Vec<FeatureRow>);
        impl LayerHook for Record {
            fn name(&self) -> &str {
                "record"
            }
            fn after_layer(&mut self, view: &mut LayerView<'_>) -> Result<Decision> {
                let row = self.0.extract(view)?;
                self.1.push(row);
                Ok(Decision::Continue)
            }
        }
        let model = SyntheticSpec::tiny(8)
            .build(candle_core::DType::F32)
            .unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut hook = Record(FeatureExtractor::new(&names, None).unwrap(), Vec::new());
        let mut cache = model.new_cache();
        model
            .forward(
                &[5, 9, 100, 7],
                &mut cache,
                Some(&mut hook),
                Outputs::LastToken,
            )
            .unwrap();
        hook.1
    }

    #[test]
    fn layer_aware_features_follow_the_probe_from_block_to_block() {
        let rows = rows_of_one_pass(&["depth", "top1_streak", "probe_shift"]);
        assert_eq!(rows.len(), 8);
        let mut streak = 0.0;
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r.values[0], (i + 1) as f32 / 8.0, "depth");
            streak = if i > 0 && rows[i - 1].top1 == r.top1 {
                streak + 1.0
            } else {
                1.0
            };
            assert_eq!(r.values[1], streak, "streak at layer {}", i + 1);
            assert!((0.0..=1.0).contains(&r.values[2]), "shift {}", r.values[2]);
        }
        assert_eq!(rows[0].values[2], 0.0, "no shift before the first block");
        assert!(rows[1..].iter().any(|r| r.values[2] > 0.0));
    }

    #[test]
    fn exit_heads_must_score_the_features_label_tokens() {
        let heads = std::sync::Arc::new(crate::plugin::exit_heads::tests::small_heads());
        let names = ["gap".to_string()];
        let err = FeatureExtractor::new(&names, Some(vec![7, 9]))
            .unwrap()
            .with_exit_heads(heads.clone())
            .unwrap_err();
        assert!(err.to_string().contains("[7, 9, 11]"), "{err}");
        assert!(FeatureExtractor::new(&names, None)
            .unwrap()
            .with_exit_heads(heads.clone())
            .is_err());
        FeatureExtractor::new(&names, Some(vec![7, 9, 11]))
            .unwrap()
            .with_exit_heads(heads)
            .unwrap();
    }

    #[test]
    fn total_variation_values() {
        assert_eq!(total_variation(&[0.5, 0.5], &[0.5, 0.5]), 0.0);
        assert!((total_variation(&[1.0, 0.0], &[0.0, 1.0]) - 1.0).abs() < 1e-6);
        assert!((total_variation(&[0.7, 0.3], &[0.4, 0.6]) - 0.3).abs() < 1e-6);
    }

    #[test]
    fn cosine_values() {
        assert!((cosine(&[1.0, 0.0], &[2.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 3.0]).abs() < 1e-6);
        assert!(cosine(&[0.0, 0.0], &[1.0, 0.0]).is_nan());
    }
}
