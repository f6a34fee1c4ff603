//! The plugin's TOML config: `[model]`, `[features]`, `[policy]` (+ one table per policy kind, so
//! one file serves every arm), `[limits]` and `[train]`. Unknown keys are errors; relative paths
//! resolve against the config file's directory. `--set section.key=value` overrides any value;
//! `--set policy.KEY=V` is shorthand for the active kind's table (`policy.<kind>.KEY`).

pub use super::calibration_record::CalibrationRecord;
use super::exit_heads::ExitHeads;
use super::features::FeatureExtractor;
use super::overrides::{apply_overrides, resolve_path_at, PATH_KEYS};
pub use super::train_config::{LogisticTrainParams, SvmTrainParams, TrainSection};
use crate::{Engine, LoadOptions};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    pub model: ModelSection,
    #[serde(default)]
    pub features: FeaturesSection,
    #[serde(default)]
    pub policy: PolicySection,
    #[serde(default)]
    pub limits: LimitsSection,
    /// How `generate` decodes: mode, KV fill, drafting (see `engine::modes`).
    #[serde(default)]
    pub generation: crate::engine::modes::ModeSpec,
    #[serde(default)]
    pub train: TrainSection,
    /// What `adainfer calibrate` certified this config for (absent in hand-written configs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationRecord>,
    /// The file this came from (for messages), not a TOML key.
    #[serde(skip)]
    pub source: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub path: PathBuf,
    #[serde(default = "default_dtype")]
    pub dtype: String,
    #[serde(default = "default_device")]
    pub device: String,
}

fn default_dtype() -> String {
    "auto".into()
}

fn default_device() -> String {
    "cpu".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturesSection {
    /// Feature names, in the order classifiers see them (see `features::FEATURE_NAMES`).
    #[serde(default = "default_features")]
    pub names: Vec<String>,
    /// Probe only these token ids (a task's answer set): cheap with a large vocabulary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_tokens: Option<Vec<u32>>,
    /// Learned exit heads (`adainfer train-heads`) that read the label answer from the hidden
    /// state where the logit lens cannot; the probe features come from them, and an exit
    /// answers with them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_heads: Option<PathBuf>,
}

fn default_features() -> Vec<String> {
    vec!["gap".into(), "top_prob".into()]
}

impl Default for FeaturesSection {
    fn default() -> Self {
        Self {
            names: default_features(),
            label_tokens: None,
            exit_heads: None,
        }
    }
}

/// `kind` picks the active policy; each kind reads its own table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    #[serde(default = "default_kind")]
    pub kind: String,
    #[serde(default)]
    pub gap_threshold: ThresholdParams,
    #[serde(default = "top_prob_default")]
    pub top_prob_threshold: ThresholdParams,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svm: Option<ClassifierParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logistic: Option<ClassifierParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crf: Option<ClassifierParams>,
    #[serde(default)]
    pub shortgpt: ShortGptParams,
    #[serde(default)]
    pub unified_skip: UnifiedSkipParams,
}

impl PluginConfig {
    /// The exit heads `[features] exit_heads` names, checked against the model and the label
    /// tokens (`None`: the features read the logit lens).
    pub fn exit_heads(
        &self,
        identity: &crate::engine::ModelIdentity,
    ) -> Result<Option<Arc<ExitHeads>>> {
        let Some(path) = &self.features.exit_heads else {
            return Ok(None);
        };
        let heads = ExitHeads::load(path)?;
        let labels = self.features.label_tokens.as_deref().with_context(|| {
            format!(
                "{}: [features] exit_heads score label tokens, so label_tokens must be set (or run the task with --label-scoring)",
                self.source.display()
            )
        })?;
        heads
            .check_compatible(identity, labels)
            .with_context(|| format!("exit heads {}", path.display()))?;
        Ok(Some(Arc::new(heads)))
    }

    /// Refuse exit heads where text is generated (`generate`, `chat`, the server): a head scores
    /// a task's label tokens only, so an exit it chose would emit the logit lens's token from a
    /// block where the lens was never checked.
    pub fn refuse_exit_heads_for(&self, what: &str) -> Result<()> {
        match &self.features.exit_heads {
            Some(heads) => bail!(
                "{}: [features] exit_heads ({}) answer a classification task's label tokens; {what} \
                 emits tokens from the LM head, which an exit the heads chose would read where the \
                 lens was never checked. Use a config without exit_heads for {what}",
                self.source.display(),
                heads.display()
            ),
            None => Ok(()),
        }
    }

    /// The feature extractor the config selects, reading the exit heads if it names any.
    pub fn feature_extractor(
        &self,
        identity: &crate::engine::ModelIdentity,
    ) -> Result<FeatureExtractor> {
        let features =
            FeatureExtractor::new(&self.features.names, self.features.label_tokens.clone())?;
        match self.exit_heads(identity)? {
            Some(heads) => features.with_exit_heads(heads),
            None => Ok(features),
        }
    }

    /// Label-restricted runs read their features over the task's labels: a config without
    /// `label_tokens` takes the task's (and says so); one made for other labels is refused.
    pub fn with_task_labels(mut self, ids: &[u32]) -> Result<Self> {
        match &self.features.label_tokens {
            None => {
                // A note, not output: eval's stdout may be JSON.
                eprintln!("features over the task's label tokens {ids:?} (the config named none)");
                self.features.label_tokens = Some(ids.to_vec());
            }
            Some(own) if own.as_slice() != ids => bail!(
                "{}: [features] label_tokens = {own:?}, but this task's labels are tokens {ids:?} \
                 (a config for another task or tokenizer?)",
                self.source.display()
            ),
            Some(_) => {}
        }
        Ok(self)
    }
}

impl PolicySection {
    /// The classifier table of a classifier policy `kind` (`svm`, `logistic`, `crf`; `None`
    /// for other kinds).
    pub fn classifier(&self, kind: &str) -> Option<&Option<ClassifierParams>> {
        match kind {
            "svm" => Some(&self.svm),
            "logistic" => Some(&self.logistic),
            "crf" => Some(&self.crf),
            _ => None,
        }
    }

    /// [`Self::classifier`], to change.
    pub fn classifier_mut(&mut self, kind: &str) -> Option<&mut Option<ClassifierParams>> {
        match kind {
            "svm" => Some(&mut self.svm),
            "logistic" => Some(&mut self.logistic),
            "crf" => Some(&mut self.crf),
            _ => None,
        }
    }

    /// Every classifier table that is set.
    pub fn classifiers_mut(&mut self) -> impl Iterator<Item = &mut ClassifierParams> {
        [&mut self.svm, &mut self.logistic, &mut self.crf]
            .into_iter()
            .flatten()
    }

    /// The threshold table of a threshold rule `kind` (`None` for other kinds).
    pub fn thresholds_mut(&mut self, kind: &str) -> Option<&mut ThresholdParams> {
        match kind {
            "gap_threshold" => Some(&mut self.gap_threshold),
            "top_prob_threshold" => Some(&mut self.top_prob_threshold),
            _ => None,
        }
    }
}

fn default_kind() -> String {
    "gap_threshold".into()
}

fn top_prob_default() -> ThresholdParams {
    ThresholdParams::new(0.9)
}

impl Default for PolicySection {
    fn default() -> Self {
        Self {
            kind: default_kind(),
            gap_threshold: ThresholdParams::default(),
            top_prob_threshold: top_prob_default(),
            svm: None,
            logistic: None,
            crf: None,
            shortgpt: ShortGptParams::default(),
            unified_skip: UnifiedSkipParams::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdParams {
    /// Exit once the feature reaches this value (the paper's θ = 0.8 for `gap`).
    pub threshold: f32,
    /// One threshold per named block instead (`[[policy.gap_threshold.per_layer]]` tables of
    /// `layer` (from 1) and `threshold`); blocks not named never exit, and `threshold` is unused.
    /// Written by `adainfer calibrate --per-layer-risks`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_layer: Vec<LayerThreshold>,
}

impl ThresholdParams {
    pub fn new(threshold: f32) -> Self {
        Self {
            threshold,
            per_layer: Vec::new(),
        }
    }
}

impl Default for ThresholdParams {
    fn default() -> Self {
        Self::new(0.8)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerThreshold {
    /// Counted from 1, as in every layer the CLI prints.
    pub layer: usize,
    pub threshold: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierParams {
    /// A file written by `adainfer train`.
    pub classifier: PathBuf,
    /// Exit when the classifier's score reaches this (logistic: probability, default 0.5;
    /// svm: decision value, default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Run the classifier over another task's label tokens than it was trained on: the paper's
    /// inter-task generalization (its Table 5). The model and the feature list must still match.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub any_task: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShortGptParams {
    /// How many layers to drop.
    #[serde(default = "one")]
    pub layers: usize,
    /// `last` (drop the last N) or `block_influence` (drop the N with the lowest BI).
    #[serde(default = "default_by")]
    pub by: String,
    /// Calibration prompts for `block_influence`: a task name (`sst2`, `agnews`) …
    #[serde(default = "default_calibration_task")]
    pub calibration_task: String,
    /// … and how many of its train prompts.
    #[serde(default = "default_calibration_limit")]
    pub calibration_limit: usize,
}

fn one() -> usize {
    1
}
fn default_by() -> String {
    "last".into()
}
fn default_calibration_task() -> String {
    "sst2".into()
}
fn default_calibration_limit() -> usize {
    16
}

impl Default for ShortGptParams {
    fn default() -> Self {
        Self {
            layers: 1,
            by: default_by(),
            calibration_task: default_calibration_task(),
            calibration_limit: default_calibration_limit(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnifiedSkipParams {
    /// Wanted speedup in layers run (dense layers / layers run), ≥ 1.
    pub target_speedup: f64,
}

impl Default for UnifiedSkipParams {
    fn default() -> Self {
        Self {
            target_speedup: 1.5,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Never exit before this layer (counted from 1; 0 or 1 = no limit).
    #[serde(default)]
    pub min_layer: usize,
    /// Never exit while the probe's top-1 probability is below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_confidence: Option<f32>,
}

impl PluginConfig {
    /// Read `path` and apply `overrides` (`section.key=value`, the value in TOML syntax or a
    /// bare string).
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read plugin config {}", path.display()))?;
        Self::parse(&text, path, overrides)
    }

    /// Parse config text as if read from `source` (relative paths resolve against its folder).
    pub fn parse(text: &str, source: &Path, overrides: &[String]) -> Result<Self> {
        // Parse the text as written first, so errors point at the file's own lines.
        toml::from_str::<PluginConfig>(text)
            .with_context(|| format!("invalid plugin config {}", source.display()))?;
        let mut doc: toml::Table = toml::from_str(text)
            .with_context(|| format!("invalid plugin config {}", source.display()))?;
        let base = source.parent().unwrap_or(Path::new("."));
        for key in PATH_KEYS {
            resolve_path_at(&mut doc, key, base);
        }
        if !overrides.is_empty() {
            apply_overrides(&mut doc, overrides)?;
        }
        let mut config: PluginConfig = toml::Table::try_into(doc).with_context(|| {
            format!(
                "invalid plugin config {} after --set {}",
                source.display(),
                overrides.join(" --set ")
            )
        })?;
        config.source = source.to_path_buf();
        Ok(config)
    }

    pub fn model_dir(&self) -> &Path {
        &self.model.path
    }

    pub fn load_options(&self) -> Result<LoadOptions> {
        LoadOptions::from_names(&self.model.dtype, &self.model.device)
            .with_context(|| format!("[model] in {}", self.source.display()))
    }
}

/// Load the config's model (or `model_override`, the `--model DIR` flag).
pub fn load_engine(config: &PluginConfig, model_override: Option<&Path>) -> Result<Engine> {
    let dir = model_override.unwrap_or(config.model_dir());
    Engine::load(dir, &config.load_options()?).with_context(|| {
        format!(
            "cannot load the model of plugin config {}",
            config.source.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[model]
path = "../models/m"

[policy]
kind = "gap_threshold"

[policy.gap_threshold]
threshold = 0.7
"#;

    fn parse(text: &str, sets: &[&str]) -> Result<PluginConfig> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        PluginConfig::parse(text, Path::new("/cfg/dir/c.toml"), &sets)
    }

    #[test]
    fn relative_model_path_resolves_against_the_config() {
        let c = parse(BASE, &[]).unwrap();
        assert_eq!(c.model_dir(), Path::new("/cfg/dir/../models/m"));
        assert_eq!(c.policy.gap_threshold.threshold, 0.7);
        assert_eq!(c.features.names, vec!["gap", "top_prob"]);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse(&format!("{BASE}\n[limits]\nmin_layr = 3\n"), &[]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("min_layr") && msg.contains("/cfg/dir/c.toml"),
            "{msg}"
        );
        let err = parse(BASE, &["limits.bogus=1"]).unwrap_err();
        assert!(format!("{err:#}").contains("bogus"), "{err:#}");
    }

    #[test]
    fn per_layer_thresholds_read_as_tables_and_refuse_typos() {
        let text = format!(
            "{BASE}\n[[policy.gap_threshold.per_layer]]\nlayer = 25\nthreshold = 0.9\n\n\
             [[policy.gap_threshold.per_layer]]\nlayer = 28\nthreshold = 0.5\n"
        );
        let c = parse(&text, &[]).unwrap();
        let layers: Vec<(usize, f32)> = c
            .policy
            .gap_threshold
            .per_layer
            .iter()
            .map(|t| (t.layer, t.threshold))
            .collect();
        assert_eq!(layers, vec![(25, 0.9), (28, 0.5)]);
        // Written back, it reads the same.
        let again = parse(&toml::to_string(&c).unwrap(), &[]).unwrap();
        assert_eq!(
            again.policy.gap_threshold.per_layer,
            c.policy.gap_threshold.per_layer
        );
        let typo = text.replace("layer = 28", "layr = 28");
        assert!(format!("{:#}", parse(&typo, &[]).unwrap_err()).contains("layr"));
    }

    #[test]
    fn policy_shorthand_follows_the_active_kind() {
        let c = parse(BASE, &["policy.threshold=0.6"]).unwrap();
        assert_eq!(c.policy.gap_threshold.threshold, 0.6);
        let c = parse(
            BASE,
            &["policy.threshold=0.95", "policy.kind=top_prob_threshold"],
        )
        .unwrap();
        assert_eq!(c.policy.kind, "top_prob_threshold");
        assert_eq!(c.policy.top_prob_threshold.threshold, 0.95);
        assert_eq!(c.policy.gap_threshold.threshold, 0.7);
        let c = parse(BASE, &["limits.min_layer=4", "features.names=[\"gap\"]"]).unwrap();
        assert_eq!(c.limits.min_layer, 4);
        assert_eq!(c.features.names, vec!["gap"]);
    }

    #[test]
    fn bad_override_syntax_is_an_error() {
        assert!(parse(BASE, &["limits.min_layer"]).is_err());
        assert!(parse(BASE, &["model.path.x=1"]).is_err());
    }
}
