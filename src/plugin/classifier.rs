//! Trained exit classifiers (`svm`, `logistic`, `crf`): fitting on collected rows, the JSON file that
//! `adainfer train` writes, and prediction. The file records the model it was trained for, the
//! feature list and the scaler; loading it for anything else is refused naming the field.
//!
//! The SVM is stored as linfa-svm serialises it (support vectors, alphas, kernel); the logistic
//! regression as its weights and intercept (we predict with them directly); the CRF as its
//! weights and transitions (`super::crf`). The CRF reads a pass's layers in order: callers score
//! through [`Classifier::score_step`] with one [`CrfState`] per pass.

use super::config::{LogisticTrainParams, SvmTrainParams};
use super::crf::{CrfState, CrfTrainParams, LinearChainCrf};
use crate::engine::ModelIdentity;
use anyhow::{bail, Context, Result};
use linfa::prelude::*;
use linfa_logistic::{FittedLogisticRegression, LogisticRegression};
use linfa_svm::Svm;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const FORMAT_VERSION: u32 = 1;

/// Per-feature standardisation fitted on the training rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scaler {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Scaler {
    pub fn fit(rows: &[Vec<f32>]) -> Self {
        let width = rows.first().map_or(0, Vec::len);
        let n = rows.len().max(1) as f64;
        let mean: Vec<f64> = (0..width)
            .map(|j| rows.iter().map(|r| r[j] as f64).sum::<f64>() / n)
            .collect();
        let std = (0..width)
            .map(|j| {
                let var = rows
                    .iter()
                    .map(|r| (r[j] as f64 - mean[j]).powi(2))
                    .sum::<f64>()
                    / n;
                // A constant feature carries no information; leave it unscaled.
                if var > 1e-24 {
                    var.sqrt()
                } else {
                    1.0
                }
            })
            .collect();
        Self { mean, std }
    }

    pub fn apply(&self, values: &[f32]) -> Vec<f64> {
        values
            .iter()
            .zip(self.mean.iter().zip(&self.std))
            .map(|(&v, (m, s))| (v as f64 - m) / s)
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClassifierModel {
    Svm { svm: Svm<f64, bool> },
    Logistic { weights: Vec<f64>, intercept: f64 },
    Crf { crf: LinearChainCrf },
}

/// What `adainfer train` measured, kept in the file for reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSummary {
    pub data: String,
    pub train_rows: usize,
    pub holdout_rows: usize,
    pub precision: f64,
    pub recall: f64,
    pub exit_rate: f64,
    pub mean_exit_layer: f64,
    /// The prompts its rows came from (training and held-out alike), so that a calibration
    /// can leave them out: a guarantee tested on the classifier's own training prompts would
    /// be optimistic. Absent in files written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<TrainingPrompts>,
}

/// Where a classifier's training rows came from: `collect`'s task, split and example ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingPrompts {
    pub task: String,
    pub split: String,
    pub ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Classifier {
    pub format: u32,
    pub identity: ModelIdentity,
    pub features: Vec<String>,
    /// `final` (paper eq. 1) or `gold`.
    pub label: String,
    /// The probe's token subset when the rows were collected (`None`: full vocabulary).
    pub label_tokens: Option<Vec<u32>>,
    pub scaler: Scaler,
    pub model: ClassifierModel,
    pub training: Option<TrainingSummary>,
}

impl Classifier {
    pub fn kind(&self) -> &'static str {
        match self.model {
            ClassifierModel::Svm { .. } => "svm",
            ClassifierModel::Logistic { .. } => "logistic",
            ClassifierModel::Crf { .. } => "crf",
        }
    }

    /// Where a row falls on its own: the SVM's decision value, the logistic probability of
    /// "exit", or the CRF's as if this were the pass's first layer.
    pub fn score(&self, values: &[f32]) -> f64 {
        self.score_step(&mut None, values)
    }

    /// Where the next layer of a pass falls; `state` carries the CRF's filter from layer to
    /// layer (start each pass with `None`; the SVM and logistic regression ignore it).
    pub fn score_step(&self, state: &mut CrfState, values: &[f32]) -> f64 {
        let x = self.scaler.apply(values);
        match &self.model {
            ClassifierModel::Svm { svm } => svm.weighted_sum(&Array1::from(x)) - svm.rho,
            ClassifierModel::Logistic { weights, intercept } => {
                let z: f64 = weights.iter().zip(&x).map(|(w, v)| w * v).sum::<f64>() + intercept;
                1.0 / (1.0 + (-z).exp())
            }
            ClassifierModel::Crf { crf } => crf.step(state, &x),
        }
    }

    /// The score at which the classifier says "exit" unless the config sets another.
    pub fn default_threshold(&self) -> f64 {
        match self.model {
            ClassifierModel::Svm { .. } => 0.0,
            ClassifierModel::Logistic { .. } | ClassifierModel::Crf { .. } => 0.5,
        }
    }

    pub fn predict(&self, values: &[f32]) -> bool {
        self.score(values) >= self.default_threshold()
    }

    /// Write as JSON through a temporary file, so a crash never leaves half a classifier.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        write_atomically(path, text.as_bytes())
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read classifier {}", path.display()))?;
        let c: Classifier = serde_json::from_str(&text)
            .with_context(|| format!("invalid classifier file {}", path.display()))?;
        if c.format != FORMAT_VERSION {
            bail!(
                "classifier {} has format {}, this build reads format {FORMAT_VERSION}",
                path.display(),
                c.format
            );
        }
        if c.scaler.mean.len() != c.features.len() || c.scaler.std.len() != c.features.len() {
            bail!(
                "classifier {}: scaler covers {} features, the file lists {}",
                path.display(),
                c.scaler.mean.len(),
                c.features.len()
            );
        }
        if let ClassifierModel::Crf { crf } = &c.model {
            crf.check(c.features.len())
                .with_context(|| format!("classifier {}", path.display()))?;
        }
        Ok(c)
    }

    /// Refuse to run for another model, feature list or probe subset; names the field.
    /// `any_task`: other label tokens are accepted on purpose (inter-task tests).
    pub fn check_compatible(
        &self,
        identity: &ModelIdentity,
        features: &[String],
        label_tokens: Option<&[u32]>,
        any_task: bool,
    ) -> Result<()> {
        self.identity.check_matches(identity)?;
        if self.features != features {
            bail!(
                "made for features = {:?}, but the config selects features = {:?}",
                self.features,
                features
            );
        }
        if !any_task && self.label_tokens.as_deref() != label_tokens {
            bail!(
                "made for label_tokens = {:?}, but the config has label_tokens = {:?} (to test \
                 it on another task on purpose, set any_task = true in its [policy.{}] table)",
                self.label_tokens,
                label_tokens,
                self.kind()
            );
        }
        Ok(())
    }
}

pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn matrix(rows: &[Vec<f64>]) -> Result<Array2<f64>> {
    let width = rows.first().map_or(0, Vec::len);
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Ok(Array2::from_shape_vec((rows.len(), width), flat)?)
}

/// Fit an SVM on scaled rows (labels: true = exit is safe).
pub fn fit_svm(x: &[Vec<f64>], y: &[bool], p: &SvmTrainParams) -> Result<ClassifierModel> {
    let dataset = Dataset::new(matrix(x)?, Array1::from(y.to_vec()));
    let params = Svm::<f64, bool>::params().pos_neg_weights(p.c, p.c);
    let params = match p.kernel.as_str() {
        "gaussian" => params.gaussian_kernel(p.gaussian_eps),
        "linear" => params.linear_kernel(),
        other => bail!("[train.svm] kernel = {other:?}: expected \"gaussian\" or \"linear\""),
    };
    let svm = params.fit(&dataset).context("SVM training failed")?;
    Ok(ClassifierModel::Svm { svm })
}

/// Fit an L2-regularised logistic regression on scaled rows.
pub fn fit_logistic(
    x: &[Vec<f64>],
    y: &[bool],
    p: &LogisticTrainParams,
) -> Result<ClassifierModel> {
    let dataset = Dataset::new(matrix(x)?, Array1::from(y.to_vec()));
    let fitted = LogisticRegression::default()
        .alpha(p.alpha)
        .max_iterations(p.max_iterations)
        .fit(&dataset)
        .context("logistic regression training failed")?;
    Ok(logistic_model(&fitted))
}

/// Fit a linear-chain CRF on whole per-prompt sequences of scaled rows.
pub fn fit_crf(
    sequences: &[(Vec<Vec<f64>>, Vec<bool>)],
    p: &CrfTrainParams,
) -> Result<ClassifierModel> {
    let crf = LinearChainCrf::fit(sequences, p).context("CRF training failed")?;
    Ok(ClassifierModel::Crf { crf })
}

/// Our stored form of a fitted linfa logistic regression: P(exit) = σ(w·x + b).
fn logistic_model(fitted: &FittedLogisticRegression<f64, bool>) -> ClassifierModel {
    // linfa maps the larger class (true) to the positive label; keep the sign explicit anyway.
    let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
    ClassifierModel::Logistic {
        weights: fitted.params().iter().map(|w| sign * w).collect(),
        intercept: sign * fitted.intercept(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Two overlapping blobs: exit rows have a larger gap and top_prob.
    fn rows(n: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<bool>) {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                let exit = i % 2 == 0;
                let shift = if exit { 0.3 } else { 0.0 };
                let gap = shift + rng.random::<f32>() * 0.6;
                let top = shift + 0.2 + rng.random::<f32>() * 0.5;
                (vec![gap, top], exit)
            })
            .unzip()
    }

    fn identity() -> ModelIdentity {
        ModelIdentity {
            architecture: "llama".into(),
            num_layers: 12,
            hidden_size: 192,
            vocab_size: 4096,
            weights_fingerprint: "abc".into(),
        }
    }

    fn wrap(scaler: Scaler, model: ClassifierModel) -> Classifier {
        Classifier {
            format: FORMAT_VERSION,
            identity: identity(),
            features: vec!["gap".into(), "top_prob".into()],
            label: "final".into(),
            label_tokens: None,
            scaler,
            model,
            training: None,
        }
    }

    fn save_and_load(c: &Classifier, name: &str) -> Classifier {
        let path =
            std::env::temp_dir().join(format!("adainfer-{name}-{}.json", std::process::id()));
        c.save(&path).unwrap();
        let loaded = Classifier::load(&path).unwrap();
        std::fs::remove_file(&path).ok();
        loaded
    }

    #[test]
    fn linfa_predictions_survive_save_and_load() {
        let (train_x, train_y) = rows(300, 1);
        let (test_x, _) = rows(200, 2);
        let scaler = Scaler::fit(&train_x);
        let x: Vec<Vec<f64>> = train_x.iter().map(|v| scaler.apply(v)).collect();
        let scaled_test =
            matrix(&test_x.iter().map(|v| scaler.apply(v)).collect::<Vec<_>>()).unwrap();
        let dataset = Dataset::new(matrix(&x).unwrap(), Array1::from(train_y.clone()));

        let fitted = LogisticRegression::default().fit(&dataset).unwrap();
        let linfa_says: Vec<bool> = fitted.predict(&scaled_test).to_vec();
        let loaded = save_and_load(&wrap(scaler.clone(), logistic_model(&fitted)), "logistic");
        let ours: Vec<bool> = test_x.iter().map(|v| loaded.predict(v)).collect();
        assert_eq!(ours, linfa_says);
        assert!(ours.iter().any(|&p| p) && ours.iter().any(|&p| !p));

        let model = fit_svm(&x, &train_y, &SvmTrainParams::default()).unwrap();
        let ClassifierModel::Svm { svm } = &model else {
            unreachable!()
        };
        let linfa_says: Vec<bool> = svm.predict(&scaled_test).to_vec();
        let before = wrap(scaler, model.clone());
        let loaded = save_and_load(&before, "svm");
        // JSON may move a float by its last bit; the predictions are what must not move.
        assert_eq!(loaded.features, before.features);
        let ours: Vec<bool> = test_x.iter().map(|v| loaded.predict(v)).collect();
        assert_eq!(ours, linfa_says);
        assert!(ours.iter().any(|&p| p) && ours.iter().any(|&p| !p));
    }

    #[test]
    fn another_model_or_feature_list_is_refused_by_name() {
        let (x, y) = rows(40, 3);
        let scaler = Scaler::fit(&x);
        let scaled: Vec<Vec<f64>> = x.iter().map(|v| scaler.apply(v)).collect();
        let c = wrap(
            scaler,
            fit_logistic(&scaled, &y, &LogisticTrainParams::default()).unwrap(),
        );
        let features = c.features.clone();
        c.check_compatible(&identity(), &features, None, false)
            .unwrap();
        let mut other = identity();
        other.num_layers = 24;
        let msg = c
            .check_compatible(&other, &features, None, false)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("num_layers"), "{msg}");
        let msg = c
            .check_compatible(&identity(), &["gap".into()], None, false)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("features"), "{msg}");
        let msg = c
            .check_compatible(&identity(), &features, Some(&[275, 289]), false)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("label_tokens"), "{msg}");
        // any_task lets other label tokens through, never another model.
        c.check_compatible(&identity(), &features, Some(&[275, 289]), true)
            .unwrap();
        let msg = c
            .check_compatible(&other, &features, Some(&[275, 289]), true)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("num_layers"), "{msg}");
    }
}
