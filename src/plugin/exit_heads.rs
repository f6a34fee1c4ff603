//! Learned exit heads: per block, a linear read-out of the last token's hidden state that scores
//! a task's label tokens, trained to give the answer the dense model gives after its last block.
//!
//! Why: the logit lens (final norm + LM head on an intermediate hidden state) assumes the middle
//! of the model already speaks the last block's language. On SmolLM2 it does not: the lens over
//! SST-2's two labels is near chance after every block but the last, although the answer is
//! already written in the hidden state, where a linear head reads it on most prompts well before
//! the end. An exit then answers with the head's scores (the hook leaves an [`ExitAnswer`]) and
//! the plugin's features (gap, top_prob, …) read the head's distribution instead of the lens's.
//!
//! A head reads the RMS-normalised hidden state (without the final norm's learned gain, which a
//! linear head absorbs). The last block has no head: running it is the dense pass. A heads file
//! records the model it was trained on, the label tokens, and the prompts of its training run,
//! so it is refused on another model or task and calibration never tests on those prompts.

use super::classifier::{write_atomically, TrainingPrompts};
use crate::engine::loader::Fnv;
use crate::engine::ModelIdentity;
use crate::hook::ExitAnswer;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub(crate) const FORMAT: u32 = 1;

/// One block's head: scores of the labels that occurred in training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearHead {
    /// The block it reads, counted from 1.
    pub layer: usize,
    /// One row of `hidden_size` weights per entry of [`ExitHeads::classes`].
    pub weights: Vec<Vec<f32>>,
    pub bias: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitHeads {
    pub format: u32,
    pub identity: ModelIdentity,
    pub task: String,
    /// The label tokens the heads score, in the task's order.
    pub label_tokens: Vec<u32>,
    /// Indices into `label_tokens` the dense model answered in training; the others never win.
    pub classes: Vec<usize>,
    /// L2 weight of the fit (linfa-logistic's `alpha`).
    pub alpha: f64,
    pub training: TrainingPrompts,
    /// Per head (same order): share of held-out prompts on which it agreed with dense (`None`
    /// when nothing was held out).
    pub holdout_agreement: Vec<Option<f32>>,
    pub heads: Vec<LinearHead>,
}

impl ExitHeads {
    /// Read and check a heads file: every shape is checked against the recorded model before
    /// anything is used, so a damaged or foreign file is an error, not a panic.
    pub fn load(path: &Path) -> Result<Self> {
        let name = path.display();
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read exit heads {name}"))?;
        let heads: ExitHeads = serde_json::from_slice(&bytes)
            .with_context(|| format!("{name}: not an exit-heads file written by `train-heads`"))?;
        heads
            .validate()
            .with_context(|| format!("exit heads {name}"))?;
        Ok(heads)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        self.validate()?;
        write_atomically(path, &serde_json::to_vec(self)?)
    }

    /// FNV-1a over the weights: a calibration made with one set of heads names it.
    pub fn fingerprint(&self) -> String {
        let mut h = Fnv::default();
        for head in &self.heads {
            h.write(&(head.layer as u64).to_le_bytes());
            for x in head.weights.iter().flatten().chain(&head.bias) {
                h.write(&x.to_le_bytes());
            }
        }
        format!("{:016x}", h.0)
    }

    fn validate(&self) -> Result<()> {
        if self.format != FORMAT {
            bail!("format {} (this build reads {FORMAT})", self.format);
        }
        let (labels, hidden) = (self.label_tokens.len(), self.identity.hidden_size);
        if labels < 2 {
            bail!("needs at least two label tokens, has {labels}");
        }
        if self.classes.is_empty() || self.classes.iter().any(|&c| c >= labels) {
            bail!(
                "classes {:?} must index the {labels} label tokens",
                self.classes
            );
        }
        if self.holdout_agreement.len() != self.heads.len() {
            bail!(
                "{} held-out agreements for {} heads",
                self.holdout_agreement.len(),
                self.heads.len()
            );
        }
        let mut last = 0;
        for head in &self.heads {
            if head.layer <= last || head.layer >= self.identity.num_layers {
                bail!(
                    "head for layer {} out of order or not before the model's last block ({})",
                    head.layer,
                    self.identity.num_layers
                );
            }
            last = head.layer;
            let shaped = head.weights.len() == self.classes.len()
                && head.bias.len() == self.classes.len()
                && head.weights.iter().all(|w| w.len() == hidden);
            if !shaped {
                bail!(
                    "head for layer {} is not {} × {hidden} weights with {} biases",
                    head.layer,
                    self.classes.len(),
                    self.classes.len()
                );
            }
            let values = head.weights.iter().flatten().chain(&head.bias);
            if values.clone().any(|x| !x.is_finite()) {
                bail!("head for layer {} holds a non-finite weight", head.layer);
            }
        }
        Ok(())
    }

    /// Refuse another model or another task's labels, saying which.
    pub fn check_compatible(&self, identity: &ModelIdentity, label_tokens: &[u32]) -> Result<()> {
        self.identity
            .check_matches(identity)
            .context("these exit heads were trained on another model")?;
        if self.label_tokens != label_tokens {
            bail!(
                "these exit heads score label_tokens = {:?} ({}), but the config has label_tokens \
                 = {:?}",
                self.label_tokens,
                self.task,
                label_tokens
            );
        }
        Ok(())
    }

    /// The head's scores over all label tokens after block `layer` (counted from 1), from the
    /// last token's hidden state; labels never seen in training score −∞. `None`: no head there.
    pub fn answer(&self, layer: usize, hidden: &[f32]) -> Option<ExitAnswer> {
        let head = self.heads.iter().find(|h| h.layer == layer)?;
        let x = rms_normalised(hidden);
        let mut logits = vec![f32::NEG_INFINITY; self.label_tokens.len()];
        for ((&class, w), b) in self.classes.iter().zip(&head.weights).zip(&head.bias) {
            logits[class] = b + w.iter().zip(&x).map(|(a, b)| a * b).sum::<f32>();
        }
        Some(ExitAnswer {
            ids: self.label_tokens.clone(),
            logits,
        })
    }
}

/// `x / sqrt(mean(x²) + ε)`: what a Llama-style final norm does before its gain.
pub fn rms_normalised(x: &[f32]) -> Vec<f32> {
    let mean_square = x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32;
    let scale = 1.0 / (mean_square + 1e-5).sqrt();
    x.iter().map(|v| v * scale).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn identity(num_layers: usize, hidden_size: usize) -> ModelIdentity {
        ModelIdentity {
            architecture: "llama".into(),
            num_layers,
            hidden_size,
            vocab_size: 100,
            weights_fingerprint: "0123456789abcdef".into(),
        }
    }

    /// Two layers' heads over three labels of which two were seen, on a 2-wide hidden state.
    pub(crate) fn small_heads() -> ExitHeads {
        ExitHeads {
            format: FORMAT,
            identity: identity(4, 2),
            task: "sst2".into(),
            label_tokens: vec![7, 9, 11],
            classes: vec![0, 2],
            alpha: 1.0,
            training: TrainingPrompts {
                task: "sst2".into(),
                split: "train".into(),
                ids: vec!["a".into()],
            },
            holdout_agreement: vec![Some(0.5), None],
            heads: vec![
                LinearHead {
                    layer: 1,
                    weights: vec![vec![1.0, 0.0], vec![0.0, 1.0]],
                    bias: vec![0.0, 0.0],
                },
                LinearHead {
                    layer: 3,
                    weights: vec![vec![-1.0, 0.0], vec![0.0, -1.0]],
                    bias: vec![0.5, 0.0],
                },
            ],
        }
    }

    #[test]
    fn a_head_scores_the_normalised_hidden_state_and_unseen_labels_never_win() {
        let heads = small_heads();
        // [3, 4] normalises to [3, 4] / sqrt(12.5): the second seen class (token 11) wins.
        let a = heads.answer(1, &[3.0, 4.0]).unwrap();
        assert_eq!(a.ids, vec![7, 9, 11]);
        let s = (12.5f32 + 1e-5).sqrt();
        assert!((a.logits[0] - 3.0 / s).abs() < 1e-5 && (a.logits[2] - 4.0 / s).abs() < 1e-5);
        assert_eq!(a.logits[1], f32::NEG_INFINITY);
        assert_eq!(a.top1(), Some(11));
        // Scale does not matter (the norm), the bias does: layer 3 prefers token 7.
        assert_eq!(heads.answer(3, &[30.0, 40.0]).unwrap().top1(), Some(7));
        assert!(
            heads.answer(2, &[1.0, 1.0]).is_none(),
            "no head after block 2"
        );
        assert!(
            heads.answer(4, &[1.0, 1.0]).is_none(),
            "the last block has none"
        );
    }

    #[test]
    fn damaged_files_are_refused_naming_what_is_wrong() {
        let dir = std::env::temp_dir().join(format!("adainfer-heads-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("heads.json");
        let heads = small_heads();
        heads.save(&path).unwrap();
        assert_eq!(ExitHeads::load(&path).unwrap(), heads);
        type Damage = fn(&mut ExitHeads);
        let cases: [(&str, Damage); 5] = [
            ("is not 2 × 2", |h| h.heads[0].weights[1].push(0.0)),
            ("not before the model's last block", |h| {
                h.heads[1].layer = 4
            }),
            ("out of order", |h| h.heads[1].layer = 1),
            ("must index", |h| h.classes = vec![0, 3]),
            ("held-out agreements", |h| {
                h.holdout_agreement.pop().map(drop).unwrap_or(())
            }),
        ];
        for (says, damage) in cases {
            let mut bad = heads.clone();
            damage(&mut bad);
            std::fs::write(&path, serde_json::to_vec(&bad).unwrap()).unwrap();
            let err = format!("{:#}", ExitHeads::load(&path).unwrap_err());
            assert!(
                err.contains(says) && err.contains("heads.json"),
                "{says}: {err}"
            );
        }
        std::fs::write(&path, b"{\"format\": 1}").unwrap();
        let err = format!("{:#}", ExitHeads::load(&path).unwrap_err());
        assert!(err.contains("not an exit-heads file"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn another_model_or_task_is_refused() {
        let heads = small_heads();
        heads
            .check_compatible(&identity(4, 2), &[7, 9, 11])
            .unwrap();
        let err = heads
            .check_compatible(&identity(5, 2), &[7, 9, 11])
            .unwrap_err();
        assert!(format!("{err:#}").contains("another model"), "{err:#}");
        let err = heads
            .check_compatible(&identity(4, 2), &[7, 9])
            .unwrap_err();
        assert!(err.to_string().contains("[7, 9, 11] (sst2)"), "{err}");
    }
}
