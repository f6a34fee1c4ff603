//! Gemma 3 (`gemma3_text`): local sliding-window blocks and global full-attention blocks
//! (`layer_types`), each with its own rotary base; per-head q/k RMSNorm; "sandwich" norms
//! around both branches; Gemma's `(1 + w)` RMSNorm; embeddings scaled by √hidden; GELU (tanh)
//! gated MLP; `query_pre_attn_scalar` for the score scale; tied head.

use super::{attention_of_layer, gated_mlp, head_matrix, projections, Family, ModelParts, Ropes};
use crate::engine::config::{
    positive, Activation, LayerType, ModelConfig, OneOrMany, RawRope, RopeConfig, RopeScaling,
};
use crate::engine::gguf::GgufFile;
use crate::engine::layers::block::{Block, SequentialBlock};
use crate::engine::layers::embedding::Embedding;
use crate::engine::layers::head::LmHead;
use crate::engine::layers::norm::Norm;
use crate::engine::weights::WeightSource;
use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::Value as GgufValue;
use serde::Deserialize;
use std::collections::HashMap;

/// HF names of a block's attention projections.
const PROJECTIONS: [&str; 4] = ["q_proj", "k_proj", "v_proj", "o_proj"];

#[derive(Debug)]
pub struct Gemma3;

/// Every `PATTERN`-th block is global in configs without `layer_types` (and in llama.cpp).
const PATTERN: usize = 6;

/// `config.json` keys; absent ones take `Gemma3TextConfig`'s defaults.
#[derive(Debug, Default, Deserialize)]
struct Keys {
    model_type: String,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    rms_norm_eps: Option<f64>,
    max_position_embeddings: Option<usize>,
    query_pre_attn_scalar: Option<f64>,
    sliding_window: Option<usize>,
    #[serde(alias = "_sliding_window_pattern")]
    sliding_window_pattern: Option<usize>,
    layer_types: Option<Vec<String>>,
    /// transformers ≥ 5: `{"full_attention": {..}, "sliding_attention": {..}}`.
    rope_parameters: Option<HashMap<String, RawRope>>,
    /// transformers 4: global θ and scaling, local θ apart.
    rope_theta: Option<f64>,
    rope_scaling: Option<RawRope>,
    rope_local_base_freq: Option<f64>,
    hidden_activation: Option<String>,
    final_logit_softcapping: Option<f64>,
    attn_logit_softcapping: Option<f64>,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<OneOrMany>,
}

fn rope(theta: f64, scaling: RopeScaling, head_dim: usize) -> RopeConfig {
    RopeConfig {
        theta,
        scaling,
        dim: head_dim,
        interleaved: false,
    }
}

impl Keys {
    fn layer_types(&self) -> Result<Vec<LayerType>> {
        match &self.layer_types {
            Some(names) => names
                .iter()
                .map(|n| match n.as_str() {
                    "sliding_attention" => Ok(LayerType::Sliding),
                    "full_attention" => Ok(LayerType::Full),
                    other => bail!("unknown layer type {other:?} in `layer_types`"),
                })
                .collect(),
            None => {
                let pattern = positive(
                    "sliding_window_pattern",
                    self.sliding_window_pattern.unwrap_or(PATTERN),
                )?;
                Ok((0..self.num_hidden_layers)
                    .map(|i| match (i + 1) % pattern {
                        0 => LayerType::Full,
                        _ => LayerType::Sliding,
                    })
                    .collect())
            }
        }
    }

    /// (global, local) rotary embeddings.
    fn ropes(&self, head_dim: usize) -> Result<(RopeConfig, RopeConfig)> {
        if let Some(params) = &self.rope_parameters {
            let of = |kind: &str| -> Result<RopeConfig> {
                let p = params
                    .get(kind)
                    .with_context(|| format!("`rope_parameters` has no `{kind}` entry"))?;
                let theta = p
                    .rope_theta
                    .with_context(|| format!("`rope_parameters.{kind}` has no `rope_theta`"))?;
                Ok(rope(theta, p.scaling()?, head_dim))
            };
            return Ok((of("full_attention")?, of("sliding_attention")?));
        }
        let scaling = self.rope_scaling.clone().unwrap_or_default().scaling()?;
        Ok((
            rope(self.rope_theta.unwrap_or(1e6), scaling, head_dim),
            rope(
                self.rope_local_base_freq.unwrap_or(1e4),
                RopeScaling::None,
                head_dim,
            ),
        ))
    }

    fn into_config(self) -> Result<ModelConfig> {
        if self.attn_logit_softcapping.is_some() || self.final_logit_softcapping.is_some() {
            bail!("logit soft-capping (attn_logit_softcapping / final_logit_softcapping, Gemma 2 style) is not supported");
        }
        let heads = positive("num_attention_heads", self.num_attention_heads)?;
        let head_dim = self.head_dim.unwrap_or(256);
        let (global, local) = self.ropes(head_dim)?;
        let scalar = self.query_pre_attn_scalar.unwrap_or(256.0);
        if scalar <= 0.0 {
            bail!("query_pre_attn_scalar must be positive, got {scalar}");
        }
        Ok(ModelConfig {
            family: &Gemma3,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: self.num_key_value_heads.unwrap_or(heads),
            head_dim,
            vocab_size: self.vocab_size,
            norm_eps: self.rms_norm_eps.unwrap_or(1e-6),
            activation: Activation::parse(
                self.hidden_activation
                    .as_deref()
                    .unwrap_or("gelu_pytorch_tanh"),
            )?,
            layer_types: self.layer_types()?,
            rope: Some(global),
            local_rope: Some(local),
            max_position_embeddings: self.max_position_embeddings.unwrap_or(131_072),
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or(true),
            qkv_bias: false,
            sliding_window: Some(self.sliding_window.unwrap_or(4096)),
            attention_scale: 1.0 / scalar.sqrt(),
            gated_mlp: true,
            bos_token_id: self.bos_token_id,
            eos_token_ids: OneOrMany::ids(self.eos_token_id),
            model_type: self.model_type,
        })
    }
}

impl Family for Gemma3 {
    fn name(&self) -> &'static str {
        "gemma3"
    }

    fn hf_config(&self, json: &serde_json::Value) -> Result<ModelConfig> {
        Keys::deserialize(json)?.into_config()
    }

    fn gguf_tensor_name(&self, hf: &str) -> Option<String> {
        const BLOCK: &[(&str, &str)] = &[
            ("input_layernorm", "attn_norm"),
            ("post_attention_layernorm", "post_attention_norm"),
            ("pre_feedforward_layernorm", "ffn_norm"),
            ("post_feedforward_layernorm", "post_ffw_norm"),
            ("self_attn.q_proj", "attn_q"),
            ("self_attn.k_proj", "attn_k"),
            ("self_attn.v_proj", "attn_v"),
            ("self_attn.o_proj", "attn_output"),
            ("self_attn.q_norm", "attn_q_norm"),
            ("self_attn.k_norm", "attn_k_norm"),
            ("mlp.gate_proj", "ffn_gate"),
            ("mlp.up_proj", "ffn_up"),
            ("mlp.down_proj", "ffn_down"),
        ];
        crate::engine::gguf::names::llama_cpp_name(hf, BLOCK)
    }

    fn gguf_config(&self, file: &GgufFile, arch: &str) -> Result<ModelConfig> {
        gguf_keys(file, arch)?
            .into_config()
            .and_then(ModelConfig::validate)
            .with_context(|| {
                format!(
                    "{}: metadata does not describe a model we can run",
                    file.path.display()
                )
            })
    }

    fn build(&self, weights: &dyn WeightSource, c: &ModelConfig) -> Result<ModelParts> {
        let (h, d, eps) = (c.hidden_size, c.head_dim, c.norm_eps);
        let norm = |name: &str, dim: usize| Norm::rms_one_plus(weights, name, dim, eps);
        let ropes = Ropes::new(c, weights)?;
        let blocks = (0..c.num_hidden_layers)
            .map(|index| {
                let p = format!("model.layers.{index}");
                let attn = format!("{p}.self_attn");
                let projections = projections(weights, c, &attn, PROJECTIONS, false, false)?;
                let attention = attention_of_layer(c, index, projections, &ropes)?.with_qk_norms(
                    norm(&format!("{attn}.q_norm"), d)?,
                    norm(&format!("{attn}.k_norm"), d)?,
                );
                let mlp = format!("{p}.mlp");
                let block = SequentialBlock {
                    attention_norm: norm(&format!("{p}.input_layernorm"), h)?,
                    attention,
                    attention_out_norm: Some(norm(&format!("{p}.post_attention_layernorm"), h)?),
                    mlp_norm: norm(&format!("{p}.pre_feedforward_layernorm"), h)?,
                    mlp: gated_mlp(weights, c, &mlp)?,
                    mlp_out_norm: Some(norm(&format!("{p}.post_feedforward_layernorm"), h)?),
                };
                Ok(Box::new(block) as Box<dyn Block>)
            })
            .collect::<Result<Vec<_>>>()?;
        let table = weights.matrix("model.embed_tokens.weight", c.vocab_size, h)?;
        let embedding =
            Embedding::new(table, weights.dtype(), weights.device()).scaled((h as f64).sqrt());
        let head = LmHead::new(
            norm("model.norm", h)?,
            head_matrix(weights, c, &embedding, "lm_head.weight")?,
            None,
        );
        Ok(ModelParts {
            embedding,
            blocks,
            head,
        })
    }
}

/// Block types from `{arch}.attention.sliding_window_pattern` as llama.cpp reads it: one bool
/// per block (true: sliding), or a period `n` (block `i` slides unless `i % n == n - 1`), or
/// absent: a period of six.
fn gguf_layer_types(file: &GgufFile, key: &str, layers: usize) -> Result<Vec<String>> {
    let name = |sliding: bool| {
        if sliding {
            "sliding_attention"
        } else {
            "full_attention"
        }
        .to_string()
    };
    if let Some(GgufValue::Array(flags)) = file.value(key) {
        return flags
            .iter()
            .map(|v| match v {
                GgufValue::Bool(b) => Ok(name(*b)),
                other => bail!(
                    "{}: `{key}` holds {other:?}, not bools",
                    file.path.display()
                ),
            })
            .collect();
    }
    let period = positive(key, file.uint(key)?.map_or(PATTERN, |v| v as usize))?;
    Ok((0..layers).map(|i| name(i % period < period - 1)).collect())
}

/// GGUF metadata as `config.json` keys. llama.cpp fixes what the file does not say: local θ
/// 10⁴ unscaled, and the score scale 1/√head_dim (but for 27B, which we do not special-case).
fn gguf_keys(file: &GgufFile, arch: &str) -> Result<Keys> {
    let key = |k: &str| format!("{arch}.{k}");
    let layers = file.required_usize(&key("block_count"))?;
    let heads = file.required_usize(&key("attention.head_count"))?;
    let head_dim = file.required_usize(&key("attention.key_length"))?;
    let scaling = match file.string(&key("rope.scaling.type"))? {
        None | Some("none") => None,
        Some(kind) => Some(RawRope {
            rope_type: Some(kind.to_string()),
            factor: file.float(&key("rope.scaling.factor"))?,
            ..RawRope::default()
        }),
    };
    let tokens = file.special_tokens()?;
    Ok(Keys {
        model_type: "gemma3_text".into(),
        hidden_size: file.required_usize(&key("embedding_length"))?,
        intermediate_size: file.required_usize(&key("feed_forward_length"))?,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: file
            .uint(&key("attention.head_count_kv"))?
            .map(|v| v as usize),
        head_dim: Some(head_dim),
        layer_types: Some(gguf_layer_types(
            file,
            &key("attention.sliding_window_pattern"),
            layers,
        )?),
        vocab_size: file.vocab_size(arch)?,
        rms_norm_eps: file.float(&key("attention.layer_norm_rms_epsilon"))?,
        max_position_embeddings: file.uint(&key("context_length"))?.map(|v| v as usize),
        query_pre_attn_scalar: Some(head_dim as f64),
        sliding_window: file
            .uint(&key("attention.sliding_window"))?
            .map(|v| v as usize),
        rope_theta: file.float(&key("rope.freq_base"))?,
        rope_scaling: scaling,
        rope_local_base_freq: Some(file.float(&key("rope.freq_base_swa"))?.unwrap_or(1e4)),
        tie_word_embeddings: Some(file.tensor_info("output.weight").is_none()),
        bos_token_id: tokens.bos,
        eos_token_id: Some(OneOrMany::Many(tokens.eos)),
        ..Keys::default()
    })
}
