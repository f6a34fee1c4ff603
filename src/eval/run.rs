//! One evaluation from start to end: load a task's examples, build the prompts, run the arms,
//! summarise. The CLI (`adainfer eval`, `adainfer calibrate`) is a thin layer over this.

use super::ab::{self, AbRun, Arm, Case, GenerationLimits, Scoring};
use super::metrics::FlopsModel;
use super::prompts::{PromptFormat, Prompts};
use super::report::{self, EvalReport};
use super::tasks::{self, Example, FewShot, Split, Task};
use crate::engine::Engine;
use anyhow::Result;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalSpec {
    pub task: Task,
    /// Which split is evaluated (calibration uses the train split's rows that are not demonstrations).
    pub split: Split,
    pub shots: usize,
    /// Evaluate the first `limit` rows of the split.
    pub limit: Option<usize>,
    /// Skip this many rows first (calibration reads rows that a `limit`-ed eval never reads).
    pub offset: usize,
    /// Example ids to leave out before `offset` and `limit` apply (calibration leaves out the
    /// prompts a classifier was trained on).
    pub exclude: BTreeSet<String>,
    /// Seed of the demonstration draw.
    pub seed: u64,
    /// Score single-token answers among the task's label tokens instead of the full vocabulary.
    pub label_scoring: bool,
    pub prompt_format: PromptFormat,
    pub max_new_tokens: usize,
    pub data_dir: PathBuf,
}

impl EvalSpec {
    pub fn new(task: Task) -> Self {
        Self {
            task,
            split: Split::Test,
            shots: 0,
            limit: None,
            offset: 0,
            exclude: BTreeSet::new(),
            seed: 0,
            label_scoring: false,
            prompt_format: PromptFormat::Qa,
            max_new_tokens: 16,
            data_dir: tasks::default_data_dir(),
        }
    }
}

/// The prompts of a spec, tokenized, and how they are scored.
pub struct Prepared {
    pub cases: Vec<Case>,
    pub scoring: Scoring,
    pub generation: Option<GenerationLimits>,
}

/// The examples a spec evaluates (demonstrations left out) and how their prompts are written.
pub fn select(engine: &Engine, spec: &EvalSpec) -> Result<(Vec<Example>, Prompts)> {
    let pool = tasks::load_examples_from(&spec.data_dir, spec.task, Split::Train, None)?;
    let few_shot = FewShot::draw(&pool, spec.shots, spec.seed)?;
    let mut examples = if spec.split == Split::Train {
        pool
    } else {
        tasks::load_examples_from(&spec.data_dir, spec.task, spec.split, None)?
    };
    examples.retain(|e| !few_shot.contains(e) && !spec.exclude.contains(&e.id));
    let examples: Vec<_> = examples
        .into_iter()
        .skip(spec.offset)
        .take(spec.limit.unwrap_or(usize::MAX))
        .collect();
    let prompts = Prompts::new(engine, spec.task, spec.prompt_format, few_shot)?;
    Ok((examples, prompts))
}

/// How a spec's answers are scored: among the task's label tokens, or the full vocabulary.
pub fn scoring(engine: &Engine, spec: &EvalSpec) -> Result<Scoring> {
    Ok(if spec.label_scoring && !spec.task.is_generative() {
        let ids = spec
            .task
            .label_words()
            .iter()
            .map(|w| ab::answer_token(engine, w, spec.prompt_format))
            .collect::<Result<Vec<_>>>()?;
        Scoring::Labels(ids)
    } else {
        Scoring::FullVocab
    })
}

pub fn prepare(engine: &Engine, spec: &EvalSpec) -> Result<Prepared> {
    let (examples, prompts) = select(engine, spec)?;
    let generative = spec.task.is_generative();
    let cases = ab::prepare_cases(engine, &examples, &prompts, generative)?;
    let scoring = scoring(engine, spec)?;
    let generation = generative.then(|| GenerationLimits {
        max_new_tokens: spec.max_new_tokens,
        stop_tokens: engine.eos_token_ids.clone(),
    });
    Ok(Prepared {
        cases,
        scoring,
        generation,
    })
}

/// Run `arms` on the prepared prompts and summarise them.
pub fn evaluate(
    engine: &Engine,
    spec: &EvalSpec,
    prepared: &Prepared,
    arms: &mut [Arm],
    on_case: impl FnMut(),
) -> Result<(EvalReport, AbRun)> {
    let run = ab::run_arms(
        engine,
        arms,
        &prepared.cases,
        &prepared.scoring,
        prepared.generation.as_ref(),
        on_case,
    )?;
    let flops = FlopsModel::of(engine.config());
    let report = EvalReport {
        task: spec.task.name().to_string(),
        shots: spec.shots,
        prompt_format: spec.prompt_format.name().to_string(),
        examples: prepared.cases.len(),
        num_layers: engine.model.num_layers(),
        scoring: prepared.scoring.name().to_string(),
        arms: report::summarise(&run, &prepared.cases, &flops),
        accuracy_by_layer: report::accuracy_by_layer(&run, &prepared.cases),
        competence: run
            .arm_names
            .iter()
            .position(|n| n == "dense")
            .and_then(|i| super::competence::of_dense(&run.outcomes[i], &prepared.cases)),
    };
    Ok((report, run))
}
