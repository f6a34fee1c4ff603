//! `[train]`: hyper-parameters of `adainfer train` (SVM, logistic, CRF classifiers) and
//! `adainfer train-heads` (the exit heads).

use serde::{Deserialize, Serialize};

/// Hyper-parameters of `adainfer train`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Share of prompts held out for the printed precision/recall.
    #[serde(default = "default_holdout")]
    pub holdout: f64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub svm: SvmTrainParams,
    #[serde(default)]
    pub logistic: LogisticTrainParams,
    #[serde(default)]
    pub crf: super::crf::CrfTrainParams,
    #[serde(default)]
    pub exit_heads: LogisticTrainParams,
}

fn default_holdout() -> f64 {
    0.2
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            holdout: default_holdout(),
            seed: 0,
            svm: SvmTrainParams::default(),
            logistic: LogisticTrainParams::default(),
            crf: super::crf::CrfTrainParams::default(),
            exit_heads: LogisticTrainParams::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SvmTrainParams {
    /// Soft-margin C (both classes; imbalance is handled by balanced subsampling).
    #[serde(default = "default_c")]
    pub c: f64,
    /// `gaussian` (RBF) or `linear`.
    #[serde(default = "default_kernel")]
    pub kernel: String,
    /// Gaussian kernel width: k(x, y) = exp(−‖x − y‖² / eps).
    #[serde(default = "default_gaussian_eps")]
    pub gaussian_eps: f64,
    /// Train on at most this many rows (the kernel matrix grows with its square).
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
}

fn default_c() -> f64 {
    1.0
}
fn default_kernel() -> String {
    "gaussian".into()
}
fn default_gaussian_eps() -> f64 {
    2.0
}
fn default_max_rows() -> usize {
    3000
}

impl Default for SvmTrainParams {
    fn default() -> Self {
        Self {
            c: default_c(),
            kernel: default_kernel(),
            gaussian_eps: default_gaussian_eps(),
            max_rows: default_max_rows(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogisticTrainParams {
    /// L2 regularisation strength.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    #[serde(default = "default_max_iterations")]
    pub max_iterations: u64,
}

fn default_alpha() -> f64 {
    1.0
}
fn default_max_iterations() -> u64 {
    200
}

impl Default for LogisticTrainParams {
    fn default() -> Self {
        Self {
            alpha: default_alpha(),
            max_iterations: default_max_iterations(),
        }
    }
}
