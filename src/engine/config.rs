//! What a model is, whatever its family or file: the hyper-parameters every decoder block,
//! embedding and head is built from (llama.cpp's `hparams`, one flat struct).
//!
//! Each family (`arch/`) reads its own `config.json` keys or GGUF metadata into this struct;
//! [`ModelConfig::from_json`] finds the family by `model_type`. HF configs carry many keys we
//! do not use, so unknown keys are allowed there (unlike our own TOML configs). The shared
//! checks run once, in [`ModelConfig::validate`].

use super::arch::{self, Family};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;

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

/// One rotary embedding: its base, scaling and which features of a head it turns.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    pub theta: f64,
    pub scaling: RopeScaling,
    /// Rotated features at the start of each head (the whole head but for GPT-J).
    pub dim: usize,
    /// GPT-J rotates adjacent pairs `(2i, 2i + 1)`; everyone else the halves `(i, i + dim/2)`.
    pub interleaved: bool,
}

/// Which attention a block runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerType {
    /// Every earlier position.
    Full,
    /// Only the last `sliding_window` positions (Mistral, Gemma 3's local layers).
    Sliding,
}

/// The MLP's non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// GELU with the tanh approximation (HF `gelu_pytorch_tanh`, `gelu_new`).
    GeluTanh,
    Relu,
}

impl Activation {
    /// The HF `hidden_act` / `activation_function` name.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "silu" | "swish" => Self::Silu,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Self::GeluTanh,
            "relu" => Self::Relu,
            other => bail!(
                "unsupported activation {other:?} (supported: silu, gelu_pytorch_tanh, gelu_new, relu)"
            ),
        })
    }
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// The family that builds this model (`arch::FAMILIES`).
    pub family: &'static dyn Family,
    /// HF `model_type` as written (`mistral` and `qwen2` are built by the llama family).
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    /// Epsilon of every norm (RMSNorm or LayerNorm, as the family has).
    pub norm_eps: f64,
    pub activation: Activation,
    /// The rotary embedding of full-attention blocks; `None`: the family has learned positions.
    pub rope: Option<RopeConfig>,
    /// Sliding blocks' rotary embedding where it differs (Gemma 3's local θ 10⁴).
    pub local_rope: Option<RopeConfig>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry a bias (Qwen2, OPT, or Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// Window of [`LayerType::Sliding`] blocks.
    pub sliding_window: Option<usize>,
    /// One entry per block.
    pub layer_types: Vec<LayerType>,
    /// Factor on q·k before the softmax (1/√head_dim, or Gemma's `query_pre_attn_scalar`^-½).
    pub attention_scale: f64,
    /// MLP with a gate (three matrices) rather than two; for FLOPs counts.
    pub gated_mlp: bool,
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

    /// The ids of an optional key (none when absent).
    pub(crate) fn ids(key: Option<Self>) -> Vec<u32> {
        key.map(Self::into_vec).unwrap_or_default()
    }
}

/// A `rope_scaling` / `rope_parameters` object as HF writes it.
#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct RawRope {
    #[serde(alias = "type")]
    pub(crate) rope_type: Option<String>,
    pub(crate) rope_theta: Option<f64>,
    pub(crate) factor: Option<f64>,
    pub(crate) low_freq_factor: Option<f64>,
    pub(crate) high_freq_factor: Option<f64>,
    pub(crate) original_max_position_embeddings: Option<f64>,
}

impl RawRope {
    pub(crate) fn scaling(&self) -> Result<RopeScaling> {
        let kind = self.rope_type.as_deref().unwrap_or("default");
        let need = |name: &str, v: Option<f64>| {
            v.with_context(|| format!("rope scaling type {kind:?} needs field `{name}`"))
        };
        Ok(match kind {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: need("factor", self.factor)?,
            },
            "llama3" => RopeScaling::Llama3 {
                factor: need("factor", self.factor)?,
                low_freq_factor: need("low_freq_factor", self.low_freq_factor)?,
                high_freq_factor: need("high_freq_factor", self.high_freq_factor)?,
                original_max_position_embeddings: need(
                    "original_max_position_embeddings",
                    self.original_max_position_embeddings,
                )?,
            },
            other => {
                bail!(
                    "unsupported rope scaling type {other:?} (supported: default, linear, llama3)"
                )
            }
        })
    }
}

/// `field` must be positive.
pub(crate) fn positive(field: &str, v: usize) -> Result<usize> {
    if v == 0 {
        bail!("field `{field}` must be positive");
    }
    Ok(v)
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read model config {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("invalid model config {}", path.display()))
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let json: serde_json::Value = serde_json::from_str(text)?;
        let model_type = json
            .get("model_type")
            .and_then(|v| v.as_str())
            .context("missing field `model_type`")?;
        let family = arch::for_model_type(model_type)?;
        family.hf_config(&json)?.validate()
    }

    /// The checks every family's config must pass (head counts, rotary widths, windows).
    pub(crate) fn validate(self) -> Result<Self> {
        for (name, v) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            positive(name, v)?;
        }
        // Bounds far above any model, so products of sizes cannot overflow and a hostile
        // file cannot size an allocation (positions are allocated as they are used).
        for (name, v, limit) in [
            ("hidden_size", self.hidden_size, 1 << 20),
            ("intermediate_size", self.intermediate_size, 1 << 22),
            ("num_hidden_layers", self.num_hidden_layers, 1 << 12),
            ("num_attention_heads", self.num_attention_heads, 1 << 12),
            ("num_key_value_heads", self.num_key_value_heads, 1 << 12),
            ("head_dim", self.head_dim, 1 << 14),
            ("vocab_size", self.vocab_size, 1 << 24),
        ] {
            if v > limit {
                bail!("field `{name}` = {v} is beyond any model (at most {limit})");
            }
        }
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        if heads % kv_heads != 0 {
            bail!("num_attention_heads ({heads}) is not a multiple of num_key_value_heads ({kv_heads})");
        }
        for rope in self.rope.iter().chain(&self.local_rope) {
            if rope.dim == 0 || rope.dim % 2 != 0 || rope.dim > self.head_dim {
                bail!(
                    "rotary dimension {} must be even and at most head_dim ({})",
                    rope.dim,
                    self.head_dim
                );
            }
        }
        if self.layer_types.len() != self.num_hidden_layers {
            bail!(
                "`layer_types` has {} entries for {} layers",
                self.layer_types.len(),
                self.num_hidden_layers
            );
        }
        if self.layer_types.contains(&LayerType::Sliding) {
            positive("sliding_window", self.sliding_window.unwrap_or(0))?;
        }
        Ok(self)
    }

    /// The HF `head_dim`, or hidden / heads where the config leaves it out.
    pub(crate) fn head_dim_or_default(
        head_dim: Option<usize>,
        hidden: usize,
        heads: usize,
    ) -> Result<usize> {
        match head_dim {
            Some(d) => Ok(d),
            None if heads > 0 && hidden % heads == 0 => Ok(hidden / heads),
            None => bail!("hidden_size ({hidden}) is not divisible by num_attention_heads ({heads}) and no head_dim is given"),
        }
    }

    /// Multiply-accumulates of one decoder block per token (projections + MLP), for FLOPs ratios.
    pub fn block_macs_per_token(&self) -> usize {
        let h = self.hidden_size;
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let mlp_matrices = if self.gated_mlp { 3 } else { 2 };
        h * q + 2 * h * kv + q * h + mlp_matrices * h * self.intermediate_size
    }

    /// The rotary embedding of block `index`'s attention, if the family rotates.
    pub fn rope_of_layer(&self, index: usize) -> Option<&RopeConfig> {
        match self.layer_types[index] {
            LayerType::Sliding => self.local_rope.as_ref().or(self.rope.as_ref()),
            LayerType::Full => self.rope.as_ref(),
        }
    }

    /// The attention window of block `index` (`None`: full causal attention).
    pub fn window_of_layer(&self, index: usize) -> Option<usize> {
        match self.layer_types[index] {
            LayerType::Sliding => self.sliding_window,
            LayerType::Full => None,
        }
    }
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
        assert_eq!(c.rope.as_ref().unwrap().scaling, RopeScaling::None);
        assert!(!c.qkv_bias);
    }

    #[test]
    fn rope_parameters_object_is_read() {
        let c =
            parse(r#","rope_parameters":{"rope_theta":500.0,"rope_type":"linear","factor":2.0}"#)
                .unwrap();
        let rope = c.rope.unwrap();
        assert_eq!(rope.theta, 500.0);
        assert_eq!(rope.scaling, RopeScaling::Linear { factor: 2.0 });
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
        let e = parse(r#","hidden_act":"gelu""#).unwrap_err().to_string();
        assert!(e.contains("gelu"), "{e}");
    }
}
