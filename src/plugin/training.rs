//! Training data for the exit classifiers: `collect` runs prompts densely and keeps one row per
//! (prompt, layer); `train` splits by prompt, balances the classes, fits and reports.
//!
//! Data file (JSON lines): a header `{"header": {identity, features, label, label_tokens, task,
//! split}}`, then rows `{"prompt": id, "layer": k, "features": [...], "label": 0|1}`. Label 1
//! means "this layer's top-1 already equals the final layer's" (`final`, paper eq. 1) or "the
//! gold answer token" (`gold`).

use super::classifier::{
    fit_crf, fit_logistic, fit_svm, write_atomically, Classifier, Scaler, TrainingPrompts,
    TrainingSummary, FORMAT_VERSION,
};
use super::config::TrainSection;
use super::features::{FeatureExtractor, FeatureRow};
use crate::engine::{ModelIdentity, Outputs};
use crate::hook::{Decision, LayerHook, LayerView, PassInfo, SkipPlan};
use crate::Engine;
use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataHeader {
    pub identity: ModelIdentity,
    pub features: Vec<String>,
    /// `final` or `gold`.
    pub label: String,
    pub label_tokens: Option<Vec<u32>>,
    pub task: String,
    pub split: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingRow {
    pub prompt: String,
    /// Counted from 1.
    pub layer: usize,
    pub features: Vec<f32>,
    pub label: u8,
}

/// One prompt to collect: its id, text and (for `--label gold`) the gold answer token.
pub struct CollectPrompt {
    pub id: String,
    pub text: String,
    pub gold_token: Option<u32>,
}

/// Records every layer's features during a dense pass.
struct Recorder {
    features: FeatureExtractor,
    rows: Vec<FeatureRow>,
}

impl LayerHook for Recorder {
    fn name(&self) -> &str {
        "collect"
    }

    fn begin_pass(&mut self, _info: &PassInfo) -> Result<SkipPlan> {
        self.features.reset();
        self.rows.clear();
        Ok(SkipPlan::none())
    }

    fn after_layer(&mut self, view: &mut LayerView<'_>) -> Result<Decision> {
        self.rows.push(self.features.extract(view)?);
        Ok(Decision::Continue)
    }
}

/// Run each prompt densely and label every layer (`gold` needs each prompt's gold token).
pub fn collect_rows(
    engine: &Engine,
    features: FeatureExtractor,
    prompts: &[CollectPrompt],
    gold: bool,
) -> Result<Vec<TrainingRow>> {
    let mut recorder = Recorder {
        features,
        rows: Vec::new(),
    };
    let mut out = Vec::new();
    for p in prompts {
        let ids = engine.encode(&p.text)?;
        let mut cache = engine.model.new_cache();
        engine
            .model
            .forward(&ids, &mut cache, Some(&mut recorder), Outputs::LastToken)
            .with_context(|| format!("prompt {}", p.id))?;
        let target = if gold {
            p.gold_token
                .with_context(|| format!("prompt {} has no gold token", p.id))?
        } else {
            recorder
                .rows
                .last()
                .context("the model has no layers")?
                .top1
        };
        out.extend(recorder.rows.iter().map(|r| TrainingRow {
            prompt: p.id.clone(),
            layer: r.layer,
            features: r.values.clone(),
            label: (r.top1 == target) as u8,
        }));
    }
    Ok(out)
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderLine {
    header: DataHeader,
}

pub fn write_data(path: &Path, header: &DataHeader, rows: &[TrainingRow]) -> Result<()> {
    let mut text = serde_json::to_string(&HeaderLine {
        header: header.clone(),
    })?;
    text.push('\n');
    for r in rows {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    write_atomically(path, text.as_bytes())
}

pub fn read_data(path: &Path) -> Result<(DataHeader, Vec<TrainingRow>)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read training data {}", path.display()))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, first) = lines
        .next()
        .with_context(|| format!("training data {} is empty", path.display()))?;
    let header = serde_json::from_str::<HeaderLine>(first)
        .with_context(|| {
            format!(
                "{} line 1: expected the {{\"header\": …}} line",
                path.display()
            )
        })?
        .header;
    let mut rows = Vec::new();
    for (n, line) in lines {
        let row: TrainingRow = serde_json::from_str(line)
            .with_context(|| format!("{} line {}", path.display(), n + 1))?;
        if row.features.len() != header.features.len() {
            bail!(
                "{} line {}: {} feature values, the header lists {}",
                path.display(),
                n + 1,
                row.features.len(),
                header.features.len()
            );
        }
        rows.push(row);
    }
    Ok((header, rows))
}

/// The rows with only the features `names` (in that order), so one `collect` of every feature
/// serves classifiers on any subset of them.
pub fn select_features(
    header: &DataHeader,
    rows: Vec<TrainingRow>,
    names: &[String],
    data_name: &str,
) -> Result<(DataHeader, Vec<TrainingRow>)> {
    let mut columns = Vec::with_capacity(names.len());
    for name in names {
        FeatureExtractor::new(std::slice::from_ref(name), None)?; // a known feature name
        if columns.iter().any(|&c| header.features[c] == *name) {
            bail!("--features names {name:?} twice");
        }
        let column = header.features.iter().position(|f| f == name).with_context(|| {
            format!(
                "{data_name} was collected without feature {name:?} (it holds {:?}); collect again with it",
                header.features
            )
        })?;
        columns.push(column);
    }
    let header = DataHeader {
        features: names.to_vec(),
        ..header.clone()
    };
    let rows = rows
        .into_iter()
        .map(|r| TrainingRow {
            features: columns.iter().map(|&c| r.features[c]).collect(),
            ..r
        })
        .collect();
    Ok((header, rows))
}

/// What `train` measured on the held-out prompts.
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub summary: TrainingSummary,
    pub train_prompts: usize,
    pub holdout_prompts: usize,
    /// Rows available for training before balancing (NaN rows dropped).
    pub available_rows: usize,
    /// Of the held-out prompts that exit early, the share whose exit layer has label 1.
    pub exit_precision: f64,
    /// The same implied exits at other decision thresholds.
    pub sweep: Vec<ThresholdPoint>,
}

#[derive(Debug, Clone)]
pub struct ThresholdPoint {
    pub threshold: f64,
    pub exit_rate: f64,
    pub mean_exit_layer: f64,
    pub exit_precision: f64,
}

/// Fit `kind` (`svm`, `logistic` or `crf`) on `rows`, holding out a share of the prompts.
pub fn train(
    header: &DataHeader,
    rows: &[TrainingRow],
    kind: &str,
    params: &TrainSection,
    data_name: &str,
) -> Result<(Classifier, TrainReport)> {
    if !(0.0..1.0).contains(&params.holdout) {
        bail!(
            "[train] holdout must be within [0, 1), got {}",
            params.holdout
        );
    }
    let mut rng = StdRng::seed_from_u64(params.seed);
    let mut prompts: Vec<&str> = rows
        .iter()
        .map(|r| r.prompt.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    prompts.shuffle(&mut rng);
    let n_holdout = (prompts.len() as f64 * params.holdout).round() as usize;
    let holdout: BTreeSet<&str> = prompts[..n_holdout].iter().copied().collect();
    // The last layer's rows say nothing (exiting there is not exiting, and with `final` labels
    // they are all 1); NaN rows are what the hook never shows a policy.
    let last = header.identity.num_layers;
    let usable = |r: &&TrainingRow| r.layer < last && r.features.iter().all(|v| v.is_finite());
    let (held, fit_rows): (Vec<&TrainingRow>, Vec<&TrainingRow>) = rows
        .iter()
        .filter(usable)
        .partition(|r| holdout.contains(r.prompt.as_str()));

    let (mut pos, mut neg): (Vec<&TrainingRow>, Vec<&TrainingRow>) =
        fit_rows.iter().partition(|r| r.label == 1);
    if pos.is_empty() || neg.is_empty() {
        bail!(
            "{data_name}: the training rows hold only label {}; both classes are needed",
            if pos.is_empty() { 0 } else { 1 }
        );
    }
    let (scaler, model, train_rows) = if kind == "crf" {
        // The CRF learns from whole passes, layer after layer: no balancing, no subsampling.
        let values: Vec<Vec<f32>> = fit_rows.iter().map(|r| r.features.clone()).collect();
        let scaler = Scaler::fit(&values);
        let sequences: Vec<(Vec<Vec<f64>>, Vec<bool>)> = by_prompt(&fit_rows)
            .into_values()
            .map(|rows| {
                rows.iter()
                    .map(|r| (scaler.apply(&r.features), r.label == 1))
                    .unzip()
            })
            .collect();
        let model = fit_crf(&sequences, &params.crf)?;
        (scaler, model, fit_rows.len())
    } else {
        // Balanced subsampling: as many "continue" rows as "exit" rows (and at most max_rows
        // for the SVM, whose kernel matrix grows with the square).
        pos.shuffle(&mut rng);
        neg.shuffle(&mut rng);
        let mut per_class = pos.len().min(neg.len());
        if kind == "svm" {
            per_class = per_class.min(params.svm.max_rows / 2).max(1);
        }
        let chosen: Vec<&TrainingRow> = pos[..per_class]
            .iter()
            .chain(&neg[..per_class])
            .copied()
            .collect();
        let values: Vec<Vec<f32>> = chosen.iter().map(|r| r.features.clone()).collect();
        let scaler = Scaler::fit(&values);
        let x: Vec<Vec<f64>> = values.iter().map(|v| scaler.apply(v)).collect();
        let y: Vec<bool> = chosen.iter().map(|r| r.label == 1).collect();
        let model = match kind {
            "svm" => fit_svm(&x, &y, &params.svm)?,
            "logistic" => fit_logistic(&x, &y, &params.logistic)?,
            other => bail!("unknown classifier {other:?} (expected svm, logistic or crf)"),
        };
        (scaler, model, chosen.len())
    };
    let mut classifier = Classifier {
        format: FORMAT_VERSION,
        identity: header.identity.clone(),
        features: header.features.clone(),
        label: header.label.clone(),
        label_tokens: header.label_tokens.clone(),
        scaler,
        model,
        training: None,
    };
    let report = evaluate(&classifier, &held, header.identity.num_layers, data_name)?;
    let report = TrainReport {
        summary: TrainingSummary {
            train_rows,
            ..report.summary
        },
        train_prompts: prompts.len() - n_holdout,
        holdout_prompts: n_holdout,
        available_rows: fit_rows.len(),
        ..report
    };
    let mut ids: Vec<String> = prompts.iter().map(|p| p.to_string()).collect();
    ids.sort();
    classifier.training = Some(TrainingSummary {
        prompts: Some(TrainingPrompts {
            task: header.task.clone(),
            split: header.split.clone(),
            ids,
        }),
        ..report.summary.clone()
    });
    Ok((classifier, report))
}

/// Row precision/recall of "exit", and the exits the classifier implies per prompt.
fn evaluate(
    classifier: &Classifier,
    held: &[&TrainingRow],
    num_layers: usize,
    data_name: &str,
) -> Result<TrainReport> {
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    // Each prompt's rows in layer order with their scores (the CRF reads them as a sequence).
    let by_prompt: Vec<Vec<(&TrainingRow, f64)>> = by_prompt(held)
        .into_values()
        .map(|rows| {
            let mut state = None;
            rows.into_iter()
                .map(|r| (r, classifier.score_step(&mut state, &r.features)))
                .collect()
        })
        .collect();
    let threshold = classifier.default_threshold();
    for &(r, score) in by_prompt.iter().flatten() {
        match (score >= threshold, r.label == 1) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            (false, false) => {}
        }
    }
    let implied = |threshold: f64| {
        let (mut exits, mut exit_ok, mut layer_sum) = (0usize, 0usize, 0usize);
        for rows in &by_prompt {
            let first = rows
                .iter()
                .find(|(r, score)| r.layer < num_layers && *score >= threshold)
                .map(|(r, _)| r);
            match first {
                Some(r) => {
                    exits += 1;
                    exit_ok += (r.label == 1) as usize;
                    layer_sum += r.layer;
                }
                None => layer_sum += num_layers,
            }
        }
        (exits, exit_ok, layer_sum)
    };
    let (exits, exit_ok, layer_sum) = implied(classifier.default_threshold());
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let prompts = by_prompt.len();
    Ok(TrainReport {
        summary: TrainingSummary {
            data: data_name.to_string(),
            train_rows: 0,
            holdout_rows: held.len(),
            precision: ratio(tp, tp + fp),
            recall: ratio(tp, tp + fn_),
            exit_rate: ratio(exits, prompts),
            mean_exit_layer: ratio(layer_sum, prompts),
            prompts: None,
        },
        train_prompts: 0,
        holdout_prompts: prompts,
        available_rows: 0,
        exit_precision: ratio(exit_ok, exits),
        sweep: threshold_grid(classifier)
            .into_iter()
            .map(|threshold| {
                let (exits, exit_ok, layer_sum) = implied(threshold);
                ThresholdPoint {
                    threshold,
                    exit_rate: ratio(exits, prompts),
                    mean_exit_layer: ratio(layer_sum, prompts),
                    exit_precision: ratio(exit_ok, exits),
                }
            })
            .collect(),
    })
}

/// `rows` grouped by prompt, each group in layer order.
fn by_prompt<'a>(rows: &[&'a TrainingRow]) -> BTreeMap<&'a str, Vec<&'a TrainingRow>> {
    let mut groups: BTreeMap<&str, Vec<&TrainingRow>> = BTreeMap::new();
    for r in rows {
        groups.entry(r.prompt.as_str()).or_default().push(r);
    }
    for group in groups.values_mut() {
        group.sort_by_key(|r| r.layer);
    }
    groups
}

/// Decision thresholds `train` reports, to pick `[policy.<kind>] threshold` for an accuracy
/// budget (the default 0 / 0.5 treats a false exit like a missed one).
fn threshold_grid(classifier: &Classifier) -> Vec<f64> {
    match classifier.kind() {
        "svm" => vec![-0.5, 0.0, 0.5, 1.0, 1.5, 2.0],
        _ => vec![0.5, 0.7, 0.8, 0.9, 0.95, 0.99],
    }
}
