//! Exit rules replayed on recorded passes: one dense pass per prompt records what the plugin's
//! feature extractor sees at every block and the answer the model would give if it stopped
//! there; any rule (threshold, minimum exit layer, classifier) is then judged by the plugin's
//! own decision code (`AdaInfer::judge`) on those rows, without running the model again.
//!
//! For single-token answers this is exact: an exit at block l returns the logits of the hidden
//! state after block l, which is what the recorded answer is read from. Generative tasks run
//! several passes per answer and are not replayed.

use super::ab::{Case, Scoring};
use super::run::Prepared;
use crate::engine::{Engine, Outputs};
use crate::hook::{Decision, LayerHook, LayerView};
use crate::plugin::features::{FeatureExtractor, FeatureRow};
use crate::plugin::AdaInfer;
use crate::plugin::PluginConfig;
use anyhow::{bail, Result};

/// One prompt's dense pass, block by block.
#[derive(Debug, Clone)]
pub struct PromptTrace {
    pub rows: Vec<FeatureRow>,
    /// The scored answer after each block (1-based block = index + 1).
    pub answers: Vec<u32>,
}

impl PromptTrace {
    /// The dense answer (after the last block).
    pub fn dense_answer(&self) -> u32 {
        *self.answers.last().expect("a pass runs at least one block")
    }
}

struct Recorder<'a> {
    features: FeatureExtractor,
    scoring: &'a Scoring,
    trace: PromptTrace,
}

impl LayerHook for Recorder<'_> {
    fn name(&self) -> &str {
        "record"
    }

    fn after_layer(&mut self, view: &mut LayerView<'_>) -> Result<Decision> {
        let row = self.features.extract(view)?;
        // Where an exit head answers, an exit there gives its answer (label scoring only).
        let head = match self.scoring {
            Scoring::Labels(ids) => self
                .features
                .head_probe()
                .filter(|p| p.ids() == Some(ids.as_slice()))
                .map(|p| p.top1()),
            Scoring::FullVocab => None,
        };
        let answer = match (head, self.scoring) {
            (Some(answer), _) => answer,
            (None, Scoring::Labels(ids)) => view.probe_tokens(ids)?.top1(),
            (None, Scoring::FullVocab) => view.probe()?.top1(),
        };
        self.trace.rows.push(row);
        self.trace.answers.push(answer);
        Ok(Decision::Continue)
    }
}

/// Record every prompt of `prepared` with the features `config` selects.
pub fn record(
    engine: &Engine,
    config: &PluginConfig,
    prepared: &Prepared,
    mut on_prompt: impl FnMut(),
) -> Result<Vec<PromptTrace>> {
    if prepared.generation.is_some() {
        bail!("exit rules are replayed on single-token answers; this task generates text");
    }
    let features = config.feature_extractor(&engine.identity)?;
    prepared
        .cases
        .iter()
        .map(|case| {
            let mut recorder = Recorder {
                features: features.clone(),
                scoring: &prepared.scoring,
                trace: PromptTrace {
                    rows: Vec::new(),
                    answers: Vec::new(),
                },
            };
            let mut cache = engine.model.new_cache();
            engine.model.forward(
                &case.tokens,
                &mut cache,
                Some(&mut recorder),
                Outputs::LastToken,
            )?;
            on_prompt();
            Ok(recorder.trace)
        })
        .collect()
}

/// What a rule did on one recorded prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Blocks run (the exit block, or all of them).
    pub layers: usize,
    pub agrees_with_dense: bool,
    pub correct: bool,
}

/// Judge every trace with the rule `config` describes.
pub fn replay(
    engine: &Engine,
    config: &PluginConfig,
    traces: &[PromptTrace],
    cases: &[Case],
) -> Result<Vec<Replayed>> {
    let mut hook = AdaInfer::from_config(config, engine)?;
    Ok(traces
        .iter()
        .zip(cases)
        .map(|(trace, case)| {
            let layers = trace
                .rows
                .iter()
                .find(|row| hook.judge(row) == Decision::Exit)
                .map_or(trace.rows.len(), |row| row.layer);
            let answer = trace.answers[layers - 1];
            Replayed {
                layers,
                agrees_with_dense: answer == trace.dense_answer(),
                correct: case.gold == Some(answer),
            }
        })
        .collect())
}
