//! A/B runs: every arm answers the same prompts in one run, interleaved prompt by prompt so
//! that every arm sees the same machine state.
//!
//! An arm is a [`LayerHook`] (or none: dense) run through `DecoderModel::forward`, or the
//! `oracle`: a dense pass watched by a [`LogitLens`] that reports the first layer from which the
//! top-1 answer never changes again (the upper bound an exit policy can reach; analysis only, so
//! it has no wall-clock). Classification tasks are one pass per prompt; SQuAD answers are
//! generated greedily, each token a fresh pass over the whole prefix (no KV cache), so an early
//! exit never leaves a cache hole behind.

use super::metrics::PassCost;
use super::prompts::{PromptFormat, Prompts};
use super::tasks::Example;
use crate::engine::{Engine, Outputs};
use crate::hook::{ExitAnswer, LayerHook};
use crate::plugin::lens::LogitLens;
use crate::plugin::policy::oracle_exit_layer;
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use std::time::Instant;

/// One prompt, tokenized, with its gold answer token (classification tasks).
pub struct Case {
    pub example: Example,
    pub tokens: Vec<u32>,
    pub gold: Option<u32>,
}

/// How a single-token answer is read from the logits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scoring {
    /// Top-1 over the whole vocabulary (the paper).
    FullVocab,
    /// Top-1 among the task's label tokens.
    Labels(Vec<u32>),
}

impl Scoring {
    pub fn name(&self) -> &'static str {
        match self {
            Scoring::FullVocab => "full_vocab",
            Scoring::Labels(_) => "label_tokens",
        }
    }

    /// The answer of a pass: a hook's own exit answer over exactly these label tokens wins
    /// over the LM head's logits (a learned exit head answered).
    fn pick_pass(&self, logits: &[f32], exit_answer: Option<&ExitAnswer>) -> u32 {
        match (self, exit_answer) {
            (Scoring::Labels(ids), Some(answer)) if *ids == answer.ids => {
                answer.top1().unwrap_or(0)
            }
            _ => self.pick(logits),
        }
    }

    fn pick(&self, logits: &[f32]) -> u32 {
        let best = |ids: &mut dyn Iterator<Item = u32>| {
            ids.max_by(|&a, &b| logits[a as usize].total_cmp(&logits[b as usize]))
                .unwrap_or(0)
        };
        match self {
            Scoring::FullVocab => best(&mut (0..logits.len() as u32)),
            Scoring::Labels(ids) => best(&mut ids.iter().copied()),
        }
    }
}

/// The single token of ` {word}` (no special tokens); an error if the tokenizer splits it.
pub fn answer_token(engine: &Engine, word: &str, format: PromptFormat) -> Result<u32> {
    let text = format.answer_text(word);
    let enc = engine
        .tokenizer
        .encode(text.as_str(), false)
        .map_err(|e| anyhow::anyhow!("cannot tokenize answer {text:?}: {e}"))?;
    match enc.get_ids() {
        [id] => Ok(*id),
        ids => bail!(
            "answer {text:?} is {} tokens {ids:?} for this tokenizer; top-1 scoring needs a single token",
            ids.len()
        ),
    }
}

/// Tokenized prompts for `examples` (demonstrations dropped from the evaluated set).
pub fn prepare_cases(
    engine: &Engine,
    examples: &[Example],
    prompts: &Prompts,
    generative: bool,
) -> Result<Vec<Case>> {
    let mut cases = Vec::with_capacity(examples.len());
    for ex in examples.iter().filter(|e| !prompts.few_shot().contains(e)) {
        let tokens = engine
            .encode(&prompts.text(ex)?)
            .with_context(|| format!("example {}", ex.id))?;
        let gold = if generative {
            None
        } else {
            Some(
                answer_token(engine, &ex.label_word, prompts.format)
                    .with_context(|| format!("example {}", ex.id))?,
            )
        };
        cases.push(Case {
            example: ex.clone(),
            tokens,
            gold,
        });
    }
    Ok(cases)
}

/// What an arm runs.
pub enum ArmKind {
    /// `None` is the dense arm.
    Hook(Option<Box<dyn LayerHook>>),
    Oracle,
    /// Another engine, dense, on the same model directory (stock mistral.rs).
    External(Box<dyn ExternalEngine>),
}

/// An engine other than ours answering the same prompt tokens, always with every layer.
pub trait ExternalEngine {
    /// The answer token after `prompt` under `scoring`.
    fn answer(&mut self, prompt: &[u32], scoring: &Scoring) -> Result<u32>;
    /// Greedy continuation, at most `limits.max_new_tokens`, stopping before a stop token.
    fn generate(&mut self, prompt: &[u32], limits: &GenerationLimits) -> Result<Vec<u32>>;
}

pub struct Arm {
    pub name: String,
    pub kind: ArmKind,
    /// LM-head probes the hook takes per layer it runs (1 for probing policies, 0 for static
    /// skip plans), for the FLOPs count; `probe_width` ids each.
    pub probes_per_layer: usize,
    pub probe_width: usize,
}

impl Arm {
    pub fn dense() -> Self {
        Self::hook("dense", None, 0, 0)
    }

    pub fn oracle() -> Self {
        Self {
            name: "oracle".into(),
            kind: ArmKind::Oracle,
            probes_per_layer: 0,
            probe_width: 0,
        }
    }

    pub fn external(name: &str, engine: Box<dyn ExternalEngine>) -> Self {
        Self {
            name: name.into(),
            kind: ArmKind::External(engine),
            probes_per_layer: 0,
            probe_width: 0,
        }
    }

    pub fn hook(
        name: &str,
        hook: Option<Box<dyn LayerHook>>,
        probes_per_layer: usize,
        probe_width: usize,
    ) -> Self {
        Self {
            name: name.into(),
            kind: ArmKind::Hook(hook),
            probes_per_layer,
            probe_width,
        }
    }
}

/// An arm's answer to one prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Token(u32),
    Text(String),
}

/// Per-layer logit lens of one prompt's (first) pass, kept by the oracle arm for plots.
#[derive(Debug, Clone, Default)]
pub struct LayerTrace {
    /// The scored answer token at each layer (1-based layer = index + 1).
    pub answers: Vec<u32>,
    pub gap: Vec<f32>,
    pub top_prob: Vec<f32>,
}

/// Everything one arm did on one prompt.
#[derive(Debug, Clone)]
pub struct CaseOutcome {
    pub answer: Answer,
    /// Layers activated, averaged over the prompt's passes (one pass unless generating).
    pub layers: f64,
    /// 1-based exit layer of the first pass, if it stopped early.
    pub exit_layer: Option<usize>,
    pub passes: Vec<PassCost>,
    pub seconds: f64,
    pub trace: Option<LayerTrace>,
}

/// How generation stops for generative tasks.
#[derive(Debug, Clone)]
pub struct GenerationLimits {
    pub max_new_tokens: usize,
    pub stop_tokens: Vec<u32>,
}

/// Run one arm on one prompt.
pub fn run_case(
    engine: &Engine,
    arm: &mut Arm,
    case: &Case,
    scoring: &Scoring,
    generation: Option<&GenerationLimits>,
) -> Result<CaseOutcome> {
    if let ArmKind::External(external) = &mut arm.kind {
        return run_external(engine, external.as_mut(), case, scoring, generation);
    }
    let num_layers = engine.model.num_layers();
    let mut tokens = case.tokens.clone();
    let mut generated = Vec::new();
    let mut outcome = CaseOutcome {
        answer: Answer::Token(0),
        layers: 0.0,
        exit_layer: None,
        passes: Vec::new(),
        seconds: 0.0,
        trace: None,
    };
    let mut layer_sum = 0usize;
    loop {
        let mut cache = engine.model.new_cache();
        let (logits, layers_run, exit) = match &mut arm.kind {
            ArmKind::Hook(hook) => {
                let start = Instant::now();
                let hook = hook.as_deref_mut().map(|h| h as &mut dyn LayerHook);
                let out = engine
                    .model
                    .forward(&tokens, &mut cache, hook, Outputs::LastToken)?;
                let logits = out.last_logits()?;
                outcome.seconds += start.elapsed().as_secs_f64();
                let exit = out.exit.map(|e| (e.layer, e.answer));
                (logits, out.layers_run, exit)
            }
            ArmKind::External(_) => unreachable!("answered by run_external above"),
            ArmKind::Oracle => {
                let mut lens = LogitLens::new(1, matches!(scoring, Scoring::Labels(_)));
                let out = engine.model.forward(
                    &tokens,
                    &mut cache,
                    Some(&mut lens),
                    Outputs::LastToken,
                )?;
                let trace = lens_trace(engine, &lens, scoring)?;
                let layer = oracle_exit_layer(&trace.answers);
                if outcome.trace.is_none() {
                    outcome.trace = Some(trace);
                }
                let exit = (layer < num_layers).then_some((layer, None));
                (out.last_logits()?, layer, exit)
            }
        };
        let (exit_layer, exit_answer) = exit.unzip();
        if outcome.passes.is_empty() {
            outcome.exit_layer = exit_layer;
        }
        layer_sum += layers_run;
        outcome.passes.push(PassCost {
            tokens: tokens.len(),
            context: tokens.len(),
            layers_run,
            probes: layers_run * arm.probes_per_layer,
            probe_width: arm.probe_width,
        });
        let Some(limits) = generation else {
            outcome.answer =
                Answer::Token(scoring.pick_pass(&logits, exit_answer.flatten().as_ref()));
            break;
        };
        let next = Scoring::FullVocab.pick(&logits);
        if limits.stop_tokens.contains(&next) {
            break;
        }
        generated.push(next);
        tokens.push(next);
        let text = engine.decode(&generated)?;
        if text.trim_start().contains('\n') || generated.len() >= limits.max_new_tokens {
            break;
        }
    }
    outcome.layers = layer_sum as f64 / outcome.passes.len() as f64;
    if generation.is_some() {
        let text = engine.decode(&generated)?;
        let first_line = text.trim_start().lines().next().unwrap_or("").trim();
        outcome.answer = Answer::Text(first_line.to_string());
    }
    Ok(outcome)
}

/// An external engine's answer: every layer runs; passes are counted as the dense arm's
/// (one over the growing prefix per generated token) so FLOPs compare like with like.
fn run_external(
    engine: &Engine,
    external: &mut dyn ExternalEngine,
    case: &Case,
    scoring: &Scoring,
    generation: Option<&GenerationLimits>,
) -> Result<CaseOutcome> {
    let num_layers = engine.model.num_layers();
    let start = Instant::now();
    let (answer, passes) = match generation {
        None => (Answer::Token(external.answer(&case.tokens, scoring)?), 1),
        Some(limits) => {
            let generated = external.generate(&case.tokens, limits)?;
            let text = engine.decode(&generated)?;
            let first_line = text.trim_start().lines().next().unwrap_or("").trim();
            (Answer::Text(first_line.to_string()), generated.len().max(1))
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let passes = (0..passes)
        .map(|i| PassCost {
            tokens: case.tokens.len() + i,
            context: case.tokens.len() + i,
            layers_run: num_layers,
            probes: 0,
            probe_width: 0,
        })
        .collect();
    Ok(CaseOutcome {
        answer,
        layers: num_layers as f64,
        exit_layer: None,
        passes,
        seconds,
        trace: None,
    })
}

/// The lens's per-layer answers under `scoring` (label scoring re-probes the kept hidden states).
fn lens_trace(engine: &Engine, lens: &LogitLens, scoring: &Scoring) -> Result<LayerTrace> {
    let mut trace = LayerTrace::default();
    for layer in &lens.layers {
        let answer = match (scoring, &layer.hidden_last_token) {
            (Scoring::Labels(ids), Some(hidden)) => {
                let h = Tensor::from_slice(hidden, (1, 1, hidden.len()), engine.model.device())?
                    .to_dtype(engine.model.dtype())?;
                let logits = crate::hook::ProbeSource::last_token_logits(
                    engine.model.head(),
                    &h,
                    Some(ids),
                )?;
                ids[Scoring::FullVocab.pick(&logits) as usize]
            }
            _ => *layer
                .top_ids
                .first()
                .context("logit lens recorded no token")?,
        };
        trace.answers.push(answer);
        trace.gap.push(layer.gap);
        trace
            .top_prob
            .push(layer.top_probs.first().copied().unwrap_or(0.0));
    }
    Ok(trace)
}

/// Every arm's outcome on every case, in arm order.
pub struct AbRun {
    pub arm_names: Vec<String>,
    pub outcomes: Vec<Vec<CaseOutcome>>,
}

/// Run every arm on every case, prompt by prompt; `on_case` is called after each prompt.
pub fn run_arms(
    engine: &Engine,
    arms: &mut [Arm],
    cases: &[Case],
    scoring: &Scoring,
    generation: Option<&GenerationLimits>,
    mut on_case: impl FnMut(),
) -> Result<AbRun> {
    let mut outcomes: Vec<Vec<CaseOutcome>> = arms.iter().map(|_| Vec::new()).collect();
    for case in cases {
        for (arm, out) in arms.iter_mut().zip(&mut outcomes) {
            let o = run_case(engine, arm, case, scoring, generation)
                .with_context(|| format!("arm {} on example {}", arm.name, case.example.id))?;
            out.push(o);
        }
        on_case();
    }
    Ok(AbRun {
        arm_names: arms.iter().map(|a| a.name.clone()).collect(),
        outcomes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoring_picks_full_or_label_top1() {
        let logits = [0.1, 3.0, 0.5, 2.0];
        assert_eq!(Scoring::FullVocab.pick(&logits), 1);
        assert_eq!(Scoring::Labels(vec![0, 2, 3]).pick(&logits), 3);
    }

    #[test]
    fn a_hooks_exit_answer_over_the_same_labels_wins() {
        let logits = [0.1, 3.0, 0.5, 2.0];
        let labels = Scoring::Labels(vec![0, 2, 3]);
        let head = ExitAnswer {
            ids: vec![0, 2, 3],
            logits: vec![0.0, 1.0, f32::NEG_INFINITY],
        };
        assert_eq!(labels.pick_pass(&logits, Some(&head)), 2);
        assert_eq!(labels.pick_pass(&logits, None), 3);
        // Another label set, or the full vocabulary, is not what the head scored.
        assert_eq!(
            Scoring::Labels(vec![0, 3]).pick_pass(&logits, Some(&head)),
            3
        );
        assert_eq!(Scoring::FullVocab.pick_pass(&logits, Some(&head)), 1);
    }
}
