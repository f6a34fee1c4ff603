//! Training [`ExitHeads`]: one dense pass per prompt records the last token's hidden state after
//! every block and the dense answer among the label tokens; per block, a multinomial logistic
//! regression (linfa-logistic) learns to give that answer from the RMS-normalised hidden state.
//! A seeded share of the prompts is held out and each head's agreement with dense on it is kept
//! in the file, so `train-heads` shows from which block the heads can be trusted at all.

use super::classifier::TrainingPrompts;
use super::config::LogisticTrainParams;
use super::exit_heads::{rms_normalised, ExitHeads, LinearHead};
use crate::engine::{Engine, Outputs};
use crate::hook::{Decision, LayerHook, LayerView};
use anyhow::{bail, Context, Result};
use linfa::prelude::*;
use linfa_logistic::MultiLogisticRegression;
use ndarray::{Array1, Array2};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

/// One prompt's dense pass: the normalised last-token hidden state after every block but the
/// last, and the dense answer (an index into the label tokens).
pub struct RecordedPrompt {
    pub id: String,
    pub hidden: Vec<Vec<f32>>,
    pub answer: usize,
}

struct HiddenRecorder<'a> {
    label_tokens: &'a [u32],
    hidden: Vec<Vec<f32>>,
    answer: Option<usize>,
}

impl LayerHook for HiddenRecorder<'_> {
    fn name(&self) -> &str {
        "record_hidden"
    }

    fn after_layer(&mut self, view: &mut LayerView<'_>) -> Result<Decision> {
        if view.number() < view.num_layers {
            self.hidden
                .push(rms_normalised(&LayerView::last_token(view.hidden)?));
        } else {
            let top1 = view.probe_tokens(self.label_tokens)?.top1();
            self.answer = self.label_tokens.iter().position(|&t| t == top1);
        }
        Ok(Decision::Continue)
    }
}

/// Run each `(id, token ids)` prompt densely and record it.
pub fn record(
    engine: &Engine,
    label_tokens: &[u32],
    prompts: &[(String, Vec<u32>)],
    mut on_prompt: impl FnMut(),
) -> Result<Vec<RecordedPrompt>> {
    prompts
        .iter()
        .map(|(id, tokens)| {
            let mut recorder = HiddenRecorder {
                label_tokens,
                hidden: Vec::new(),
                answer: None,
            };
            let mut cache = engine.model.new_cache();
            engine
                .model
                .forward(tokens, &mut cache, Some(&mut recorder), Outputs::LastToken)
                .with_context(|| format!("prompt {id}"))?;
            on_prompt();
            Ok(RecordedPrompt {
                id: id.clone(),
                hidden: recorder.hidden,
                answer: recorder
                    .answer
                    .context("the pass never reached its last block")?,
            })
        })
        .collect()
}

/// What a fit needs besides the recorded prompts.
pub struct HeadsSpec<'a> {
    pub engine: &'a Engine,
    pub task: String,
    pub split: String,
    pub label_tokens: Vec<u32>,
    pub holdout: f64,
    pub seed: u64,
    /// `[train.exit_heads]`: the same settings as a logistic exit classifier's.
    pub params: LogisticTrainParams,
}

/// Fit one head per block on the recorded prompts (a seeded `holdout` share left out and used
/// only to measure each head's agreement with dense).
pub fn fit(spec: &HeadsSpec<'_>, recorded: &[RecordedPrompt]) -> Result<ExitHeads> {
    if !(0.0..1.0).contains(&spec.holdout) {
        bail!(
            "[train] holdout must be within [0, 1), got {}",
            spec.holdout
        );
    }
    let mut order: Vec<usize> = (0..recorded.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(spec.seed));
    let n_holdout = (recorded.len() as f64 * spec.holdout).round() as usize;
    let (held, fitted) = order.split_at(n_holdout);
    let mut classes: Vec<usize> = fitted.iter().map(|&i| recorded[i].answer).collect();
    classes.sort_unstable();
    classes.dedup();
    if classes.len() < 2 {
        bail!(
            "the dense model gave the same answer to all {} training prompts: a head has nothing \
             to learn (use prompts on which the model's answers vary)",
            fitted.len()
        );
    }
    let identity = spec.engine.identity.clone();
    let blocks = identity.num_layers - 1;
    let mut heads = Vec::with_capacity(blocks);
    let mut holdout_agreement = Vec::with_capacity(blocks);
    for block in 0..blocks {
        let matrix = |rows: &[usize]| -> Result<Array2<f64>> {
            let flat = rows
                .iter()
                .flat_map(|&i| recorded[i].hidden[block].iter().map(|&v| v as f64))
                .collect();
            Ok(Array2::from_shape_vec(
                (rows.len(), identity.hidden_size),
                flat,
            )?)
        };
        let targets = Array1::from_iter(fitted.iter().map(|&i| recorded[i].answer));
        let model = MultiLogisticRegression::default()
            .alpha(spec.params.alpha)
            .max_iterations(spec.params.max_iterations)
            .fit(&Dataset::new(matrix(fitted)?, targets))
            .with_context(|| format!("fitting the exit head of block {}", block + 1))?;
        let (weights, bias) = (model.params(), model.intercept());
        if model.classes() != classes.as_slice() {
            bail!(
                "linfa returned classes {:?}, expected {classes:?}",
                model.classes()
            );
        }
        heads.push(LinearHead {
            layer: block + 1,
            weights: (0..classes.len())
                .map(|c| weights.column(c).iter().map(|&w| w as f32).collect())
                .collect(),
            bias: bias.iter().map(|&b| b as f32).collect(),
        });
        let agree = if held.is_empty() {
            None
        } else {
            let predicted = model.predict(&matrix(held)?);
            let same = held
                .iter()
                .zip(predicted.iter())
                .filter(|(&i, &p)| recorded[i].answer == p)
                .count();
            Some(same as f32 / held.len() as f32)
        };
        holdout_agreement.push(agree);
    }
    let heads = ExitHeads {
        format: super::exit_heads::FORMAT,
        identity,
        task: spec.task.clone(),
        label_tokens: spec.label_tokens.clone(),
        classes,
        alpha: spec.params.alpha,
        training: TrainingPrompts {
            task: spec.task.clone(),
            split: spec.split.clone(),
            ids: recorded.iter().map(|r| r.id.clone()).collect(),
        },
        holdout_agreement,
        heads,
    };
    Ok(heads)
}
