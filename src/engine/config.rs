//! `config.json` of a Hugging Face decoder: the subset of keys Llama / Mistral / Qwen2 need.
//!
//! HF configs carry many keys we do not use, so unknown keys are allowed here (unlike our own
//! TOML configs). Everything we do read is validated once, in [`ModelConfig::from_file`].

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;

/// The architectures the engine implements. They share one decoder; the differences are flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
}

impl Architecture {
    fn parse(model_type: &str) -> Result<Self> {
        Ok(match model_type {
            "llama" => Self::Llama,
            "mistral" => Self::Mistral,
            "qwen2" => Self::Qwen2,
            other => bail!(
                "unsupported model_type {other:?} in config.json (supported: llama, mistral, qwen2)"
            ),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Qwen2 => "qwen2",
        }
    }
}

/// How rotary frequencies are rescaled for long context.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Position interpolation: every frequency divided by `factor`.
    Linear {
        factor: f64,
    },
    /// Llama 3.1: low frequencies scaled, high kept, a smooth blend between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry a bias (Qwen2, or Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// Mistral's sliding window; `None` means full causal attention.
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

/// `eos_token_id` is an int or a list of ints in HF configs.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

impl OneOrMany {
    pub(crate) fn into_vec(self) -> Vec<u32> {
        match self {
            Self::One(x) => vec![x],
            Self::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawRope {
    #[serde(alias = "type")]
    pub(crate) rope_type: Option<String>,
    pub(crate) rope_theta: Option<f64>,
    pub(crate) factor: Option<f64>,
    pub(crate) low_freq_factor: Option<f64>,
    pub(crate) high_freq_factor: Option<f64>,
    pub(crate) original_max_position_embeddings: Option<f64>,
}

/// `config.json` as written; GGUF metadata is mapped onto the same fields so both formats
/// share one validation.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawConfig {
    pub(crate) model_type: Option<String>,
    pub(crate) hidden_size: usize,
    pub(crate) intermediate_size: usize,
    pub(crate) num_hidden_layers: usize,
    pub(crate) num_attention_heads: usize,
    pub(crate) num_key_value_heads: Option<usize>,
    pub(crate) head_dim: Option<usize>,
    pub(crate) vocab_size: usize,
    pub(crate) rms_norm_eps: Option<f64>,
    pub(crate) rope_theta: Option<f64>,
    pub(crate) rope_scaling: Option<RawRope>,
    /// Newer transformers nest theta and scaling here.
    pub(crate) rope_parameters: Option<RawRope>,
    pub(crate) max_position_embeddings: Option<usize>,
    pub(crate) tie_word_embeddings: Option<bool>,
    pub(crate) attention_bias: Option<bool>,
    pub(crate) sliding_window: Option<usize>,
    pub(crate) use_sliding_window: Option<bool>,
    pub(crate) hidden_act: Option<String>,
    pub(crate) bos_token_id: Option<u32>,
    pub(crate) eos_token_id: Option<OneOrMany>,
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read model config {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("invalid model config {}", path.display()))
    }

    pub fn from_json(text: &str) -> Result<Self> {
        Self::from_raw(serde_json::from_str(text)?)
    }

    pub(crate) fn from_raw(raw: RawConfig) -> Result<Self> {
        let model_type = raw
            .model_type
            .as_deref()
            .context("missing field `model_type`")?;
        let architecture = Architecture::parse(model_type)?;
        if let Some(act) = raw.hidden_act.as_deref() {
            if act != "silu" {
                bail!("unsupported hidden_act {act:?} (only silu)");
            }
        }
        let positive = |name: &str, v: usize| -> Result<usize> {
            if v == 0 {
                bail!("field `{name}` must be positive");
            }
            Ok(v)
        };
        let heads = positive("num_attention_heads", raw.num_attention_heads)?;
        let kv_heads = positive(
            "num_key_value_heads",
            raw.num_key_value_heads.unwrap_or(heads),
        )?;
        if heads % kv_heads != 0 {
            bail!("num_attention_heads ({heads}) is not a multiple of num_key_value_heads ({kv_heads})");
        }
        let hidden = positive("hidden_size", raw.hidden_size)?;
        let head_dim = match raw.head_dim {
            Some(d) => positive("head_dim", d)?,
            None if hidden % heads == 0 => hidden / heads,
            None => bail!("hidden_size ({hidden}) is not divisible by num_attention_heads ({heads}) and no head_dim is given"),
        };
        if head_dim % 2 != 0 {
            bail!("head_dim ({head_dim}) must be even for rotary embeddings");
        }
        let rope = raw.rope_parameters.as_ref().or(raw.rope_scaling.as_ref());
        let rope_theta = raw
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_theta)
            .or(raw.rope_theta)
            .unwrap_or(10_000.0);
        let rope_scaling = parse_rope_scaling(rope)?;
        let sliding_window = match architecture {
            Architecture::Mistral => raw.sliding_window,
            Architecture::Qwen2 if raw.use_sliding_window == Some(true) => raw.sliding_window,
            _ => None,
        };
        Ok(Self {
            architecture,
            hidden_size: hidden,
            intermediate_size: positive("intermediate_size", raw.intermediate_size)?,
            num_hidden_layers: positive("num_hidden_layers", raw.num_hidden_layers)?,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            vocab_size: positive("vocab_size", raw.vocab_size)?,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            qkv_bias: architecture == Architecture::Qwen2 || raw.attention_bias.unwrap_or(false),
            sliding_window,
            bos_token_id: raw.bos_token_id,
            eos_token_ids: raw
                .eos_token_id
                .map(OneOrMany::into_vec)
                .unwrap_or_default(),
        })
    }

    /// Multiply-accumulates of one decoder block per token (projections + MLP), for FLOPs ratios.
    pub fn block_macs_per_token(&self) -> usize {
        let h = self.hidden_size;
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        h * q + 2 * h * kv + q * h + 3 * h * self.intermediate_size
    }
}

fn parse_rope_scaling(raw: Option<&RawRope>) -> Result<RopeScaling> {
    let Some(raw) = raw else {
        return Ok(RopeScaling::None);
    };
    let kind = raw.rope_type.as_deref().unwrap_or("default");
    let need = |name: &str, v: Option<f64>| {
        v.with_context(|| format!("rope scaling type {kind:?} needs field `{name}`"))
    };
    Ok(match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: need("factor", raw.factor)?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: need("factor", raw.factor)?,
            low_freq_factor: need("low_freq_factor", raw.low_freq_factor)?,
            high_freq_factor: need("high_freq_factor", raw.high_freq_factor)?,
            original_max_position_embeddings: need(
                "original_max_position_embeddings",
                raw.original_max_position_embeddings,
            )?,
        },
        other => {
            bail!("unsupported rope scaling type {other:?} (supported: default, linear, llama3)")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,
        "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":32"#;

    fn parse(extra: &str) -> Result<ModelConfig> {
        ModelConfig::from_json(&format!("{BASE}{extra}}}"))
    }

    #[test]
    fn defaults_and_head_dim() {
        let c = parse("").unwrap();
        assert_eq!(c.head_dim, 16);
        assert_eq!(c.rope_scaling, RopeScaling::None);
        assert!(!c.qkv_bias);
    }

    #[test]
    fn rope_parameters_object_is_read() {
        let c =
            parse(r#","rope_parameters":{"rope_theta":500.0,"rope_type":"linear","factor":2.0}"#)
                .unwrap();
        assert_eq!(c.rope_theta, 500.0);
        assert_eq!(c.rope_scaling, RopeScaling::Linear { factor: 2.0 });
    }

    #[test]
    fn bad_values_are_named() {
        let e = ModelConfig::from_json(&format!("{}}}", BASE.replace("llama", "gpt2")))
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("gpt2"), "{e}");
        let e = ModelConfig::from_json(&format!(
            "{}}}",
            BASE.replace("\"num_key_value_heads\":2", "\"num_key_value_heads\":3")
        ))
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert!(e.contains("num_key_value_heads"), "{e}");
        let e = parse(r#","rope_scaling":{"rope_type":"yarn","factor":2.0}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("yarn"), "{e}");
        let e =
            parse(r#","eos_token_id":[1,2],"rope_scaling":{"rope_type":"llama3","factor":8.0}"#)
                .unwrap_err()
                .to_string();
        assert!(e.contains("low_freq_factor"), "{e}");
    }
}
