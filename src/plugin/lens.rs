//! The logit lens as a hook: records, for every layer, the last token's probe and hidden state.
//! `inspect` prints it; `collect` turns it into training rows.

use crate::hook::{Decision, LayerHook, LayerView};
use anyhow::Result;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct LensLayer {
    /// Counted from 1.
    pub layer: usize,
    pub top_ids: Vec<u32>,
    pub top_probs: Vec<f32>,
    pub gap: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_last_token: Option<Vec<f32>>,
}

/// Watches every layer and never exits.
#[derive(Default)]
pub struct LogitLens {
    pub top_k: usize,
    pub keep_hidden: bool,
    pub layers: Vec<LensLayer>,
}

impl LogitLens {
    pub fn new(top_k: usize, keep_hidden: bool) -> Self {
        Self {
            top_k,
            keep_hidden,
            layers: Vec::new(),
        }
    }
}

impl LayerHook for LogitLens {
    fn name(&self) -> &str {
        "logit_lens"
    }

    fn after_layer(&mut self, view: &mut LayerView<'_>) -> Result<Decision> {
        let hidden = if self.keep_hidden {
            Some(LayerView::last_token(view.hidden)?)
        } else {
            None
        };
        let layer = view.number();
        let probe = view.probe()?;
        let top = probe.top_k(self.top_k);
        self.layers.push(LensLayer {
            layer,
            top_ids: top.iter().map(|t| t.0).collect(),
            top_probs: top.iter().map(|t| t.1).collect(),
            gap: probe.gap(),
            hidden_last_token: hidden,
        });
        Ok(Decision::Continue)
    }
}
