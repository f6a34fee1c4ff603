//! `[calibration]`: what a calibrated config guarantees and for which model, task and features.
//! `calibrate` writes it; loading a config checks it against what the config now selects.

use super::config::FeaturesSection;
use super::exit_heads::ExitHeads;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The guarantee a calibrated config carries, and what it holds for: the model, the task and
/// prompt form, the features. Used with anything else, the guarantee means nothing, so the
/// config is refused (see [`CalibrationRecord::check`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationRecord {
    pub model: crate::engine::ModelIdentity,
    pub task: String,
    pub split: String,
    pub shots: usize,
    /// Seed of the demonstration draw.
    pub seed: u64,
    /// `qa` or `chat` (`eval --prompt-format`).
    pub prompt_format: String,
    pub label_scoring: bool,
    pub features: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_tokens: Option<Vec<u32>>,
    /// Fingerprint of the exit heads the features were read from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_heads: Option<String>,
    pub policy: String,
    /// Budget: share of prompts whose answer may differ from dense.
    pub epsilon: f64,
    /// The guarantee fails with probability at most this.
    pub delta: f64,
    /// Calibration prompts, and the chosen rule's disagreements on them.
    pub prompts: usize,
    pub disagreements: usize,
    pub p_value: f64,
}

impl CalibrationRecord {
    /// Refuse a model or feature set other than the calibrated one; names what differs.
    pub fn check(
        &self,
        identity: &crate::engine::ModelIdentity,
        features: &FeaturesSection,
        exit_heads: Option<&ExitHeads>,
    ) -> Result<()> {
        let heads = exit_heads.map(ExitHeads::fingerprint);
        if self.exit_heads != heads {
            let say = |f: &Option<String>| match f {
                Some(f) => format!("exit heads {f}"),
                None => "the logit lens (no exit heads)".to_string(),
            };
            bail!(
                "this config was calibrated with {}, but its features now read {}",
                say(&self.exit_heads),
                say(&heads)
            );
        }
        self.model
            .check_matches(identity)
            .context("this config was calibrated for another model")?;
        if self.features != features.names {
            bail!(
                "this config was calibrated with features = {:?}, but it now selects features = {:?}",
                self.features,
                features.names
            );
        }
        if self.label_tokens != features.label_tokens {
            bail!(
                "this config was calibrated with label_tokens = {:?}, but it now has label_tokens = {:?}",
                self.label_tokens,
                features.label_tokens
            );
        }
        Ok(())
    }
}
