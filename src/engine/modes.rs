//! One entry point for the three ways to generate: dense, early exit, self-speculative.

use super::early_exit::generate_early_exit;
use super::generate::{generate_dense, Generation, GenerationParams};
use super::kv_fill::KvFill;
use super::lookup_decode::generate_token_drafts;
use super::model::DecoderModel;
use super::speculative::{generate_self_speculative, DraftSettings, DraftSource};
use crate::hook::LayerHook;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// How `generate` decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every block for every token.
    Dense,
    /// Each token stops where the hook says (lossy); the KV hole is filled per [`KvFill`].
    EarlyExit,
    /// Shallow drafts verified by all blocks: dense output, fewer full passes.
    SelfSpeculative,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Dense, Mode::EarlyExit, Mode::SelfSpeculative];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Dense => "dense",
            Mode::EarlyExit => "early_exit",
            Mode::SelfSpeculative => "self_speculative",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Mode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown mode {s:?}: expected dense, early_exit or self_speculative"
                )
            })
    }
}

/// A mode with its settings; also the `[generation]` table of a plugin config (every key
/// optional, `[generation.draft]` for drafting).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModeSpec {
    pub mode: Mode,
    /// Used by [`Mode::EarlyExit`].
    pub kv_fill: KvFill,
    /// Exit (early exit) or draft (self-speculative) after this block (1-based) instead of
    /// asking the plugin's policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_layer: Option<usize>,
    /// Drafting per round, used by [`Mode::SelfSpeculative`].
    pub draft: DraftSettings,
}

impl Default for ModeSpec {
    fn default() -> Self {
        Self {
            mode: Mode::Dense,
            kv_fill: KvFill::Recompute,
            fixed_layer: None,
            draft: DraftSettings::fixed(4),
        }
    }
}

impl ModeSpec {
    pub fn dense() -> Self {
        Self::default()
    }

    /// Whether this mode needs an exit policy (a hook): early exit always, self-speculative
    /// when the model's own layers draft; dense and prompt-lookup drafts never.
    pub fn needs_policy(&self) -> bool {
        match self.mode {
            Mode::Dense => false,
            Mode::EarlyExit => true,
            Mode::SelfSpeculative => self.draft.source.needs_policy(),
        }
    }

    /// Short name for reports: `dense`, `early_exit/recompute`, `self_speculative/k=4/c=0.3`,
    /// `self_speculative/auto/k=8`, `self_speculative/skip_layers/k=3/s=10+15+20`.
    pub fn label(&self) -> String {
        let d = &self.draft;
        let bar = || {
            let mut bar = String::new();
            if d.min_confidence > 0.0 {
                bar += &format!("/c={}", d.min_confidence);
            }
            if d.target_acceptance > 0.0 {
                bar += &format!("/a={}", d.target_acceptance);
            }
            bar
        };
        match (self.mode, d.source) {
            (Mode::Dense, _) => "dense".into(),
            (Mode::EarlyExit, _) => format!("early_exit/{}", self.kv_fill),
            (Mode::SelfSpeculative, DraftSource::Layers) => {
                let mut label = format!("self_speculative/k={}{}", d.tokens, bar());
                if d.vocab > 0 {
                    label += &format!("/v={}", d.vocab);
                }
                label
            }
            (Mode::SelfSpeculative, DraftSource::SkipLayers) => format!(
                "self_speculative/skip_layers/k={}/s={}{}",
                d.tokens,
                d.skip,
                bar()
            ),
            (Mode::SelfSpeculative, source) => {
                let mut label = format!("self_speculative/{}/k={}", source.name(), d.tokens);
                if source == DraftSource::Auto && !d.skip.is_empty() {
                    label += &format!("/s={}", d.skip);
                }
                label
            }
        }
    }
}

/// A generation in any mode, with where each token came from.
#[derive(Debug, Clone, Serialize)]
pub struct AdaptiveGeneration {
    #[serde(flatten)]
    pub generation: Generation,
    /// For each generated token, the blocks run by the pass whose logits chose it.
    pub depths: Vec<usize>,
    /// Seconds spent in the hook (probes and policy) during decode.
    pub decode_hook_seconds: f64,
    /// Self-speculative only: rounds, drafted and accepted tokens, blocks run by drafts.
    pub rounds: usize,
    pub drafted: usize,
    pub accepted: usize,
    pub draft_blocks: usize,
}

impl AdaptiveGeneration {
    pub(crate) fn new(generation: Generation, depths: Vec<usize>) -> Self {
        Self {
            generation,
            depths,
            decode_hook_seconds: 0.0,
            rounds: 0,
            drafted: 0,
            accepted: 0,
            draft_blocks: 0,
        }
    }

    /// Mean depth of the generated tokens, in blocks.
    pub fn mean_depth(&self) -> f64 {
        ratio(self.depths.iter().sum(), self.depths.len())
    }

    /// Share of drafted tokens that verification kept.
    pub fn acceptance_rate(&self) -> f64 {
        ratio(self.accepted, self.drafted)
    }

    /// Mean number of blocks a draft pass ran.
    pub fn mean_draft_depth(&self) -> f64 {
        ratio(self.draft_blocks, self.drafted)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Generate in `spec`'s mode. `hook` decides exits (early exit) or draft depth (speculative);
/// dense ignores it. `on_token` sees each token with its depth as it is settled.
pub fn generate_mode(
    model: &DecoderModel,
    prompt: &[u32],
    params: &GenerationParams,
    spec: &ModeSpec,
    hook: Option<&mut dyn LayerHook>,
    mut on_token: impl FnMut(u32, usize) -> Result<()>,
) -> Result<AdaptiveGeneration> {
    let n = model.num_layers();
    match (spec.mode, hook) {
        (Mode::Dense, _) => {
            let g = generate_dense(model, prompt, params, |t| on_token(t, n))?;
            let depths = vec![n; g.tokens.len()];
            Ok(AdaptiveGeneration::new(g, depths))
        }
        (Mode::SelfSpeculative, _) if !spec.needs_policy() => {
            generate_token_drafts(model, prompt, params, &spec.draft, on_token)
        }
        (mode, None) => bail!(
            "mode {mode} needs an exit policy: a fixed layer (--draft-layer) or a plugin config (--config)"
        ),
        (Mode::EarlyExit, Some(hook)) => {
            generate_early_exit(model, prompt, params, hook, spec.kv_fill, on_token)
        }
        (Mode::SelfSpeculative, Some(hook)) => {
            generate_self_speculative(model, prompt, params, hook, &spec.draft, on_token)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::early_exit::FixedExit;
    use crate::engine::synthetic::SyntheticSpec;
    use candle_core::DType;

    #[test]
    fn a_generation_table_names_skip_draft_blocks_from_1() {
        let spec: ModeSpec = toml::from_str(
            "mode = \"self_speculative\"\n[draft]\nsource = \"skip_layers\"\ntokens = 3\nskip = [28, 5]\n",
        )
        .unwrap();
        assert_eq!(spec.draft.skip.indices().collect::<Vec<_>>(), vec![4, 27]);
        assert!(!spec.needs_policy(), "skip drafts need no exit policy");
        assert_eq!(spec.label(), "self_speculative/skip_layers/k=3/s=5+28");
        let e = toml::from_str::<ModeSpec>("[draft]\nskip = [0]\n").unwrap_err();
        assert!(e.to_string().contains("counted from 1"), "{e}");
    }

    #[test]
    fn modes_dispatch_and_need_a_policy_except_dense() {
        let model = SyntheticSpec::tiny(3).build(DType::F32).unwrap();
        let params = GenerationParams::greedy(5);
        let prompt = [9, 8, 7];
        let mut fixed = FixedExit::new(1, 3).unwrap();
        let dense = generate_mode(
            &model,
            &prompt,
            &params,
            &ModeSpec::dense(),
            Some(&mut fixed),
            |_, _| Ok(()),
        )
        .unwrap();
        assert_eq!(dense.depths, vec![3; 5], "dense ignores the hook");
        let exit = ModeSpec {
            mode: Mode::EarlyExit,
            ..ModeSpec::dense()
        };
        let g = generate_mode(&model, &prompt, &params, &exit, Some(&mut fixed), |_, _| {
            Ok(())
        })
        .unwrap();
        assert_eq!(g.depths, vec![1; 5]);
        let e = generate_mode(&model, &prompt, &params, &exit, None, |_, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("early_exit") && e.contains("--draft-layer"),
            "{e}"
        );
        assert_eq!(
            "self_speculative".parse::<Mode>().unwrap(),
            Mode::SelfSpeculative
        );
        assert!("fast"
            .parse::<Mode>()
            .unwrap_err()
            .to_string()
            .contains("\"fast\""));
    }
}
