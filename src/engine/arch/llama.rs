//! Llama, and the families that are Llama with options: Mistral (sliding window) and Qwen2
//! (q/k/v biases). Pre-norm RMSNorm blocks, SiLU-gated MLP, half-split rotary, GQA.

use super::{
    attention_of_layer, gated_mlp, projections, uniform_layers, Family, ModelParts, Ropes,
};
use crate::engine::config::{positive, Activation, ModelConfig, OneOrMany, RawRope, RopeConfig};
use crate::engine::gguf::GgufFile;
use crate::engine::layers::block::{Block, SequentialBlock};
use crate::engine::layers::embedding::Embedding;
use crate::engine::layers::head::LmHead;
use crate::engine::layers::norm::Norm;
use crate::engine::weights::WeightSource;
use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// HF names of a block's attention projections.
const PROJECTIONS: [&str; 4] = ["q_proj", "k_proj", "v_proj", "o_proj"];

#[derive(Debug)]
pub struct Llama;

/// `config.json` keys of the Llama family; GGUF metadata is mapped onto the same fields so
/// both formats share one reading.
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
    rope_theta: Option<f64>,
    rope_scaling: Option<RawRope>,
    /// Newer transformers nest theta and scaling here.
    rope_parameters: Option<RawRope>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    hidden_act: Option<String>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<OneOrMany>,
}

impl Keys {
    fn into_config(self) -> Result<ModelConfig> {
        let heads = positive("num_attention_heads", self.num_attention_heads)?;
        let head_dim = ModelConfig::head_dim_or_default(self.head_dim, self.hidden_size, heads)?;
        let rope = self.rope_parameters.as_ref().or(self.rope_scaling.as_ref());
        let theta = self
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_theta)
            .or(self.rope_theta)
            .unwrap_or(10_000.0);
        let scaling = rope.cloned().unwrap_or_default().scaling()?;
        let sliding_window = match self.model_type.as_str() {
            "mistral" => self.sliding_window,
            "qwen2" if self.use_sliding_window == Some(true) => self.sliding_window,
            _ => None,
        };
        Ok(ModelConfig {
            family: &Llama,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: self.num_key_value_heads.unwrap_or(heads),
            head_dim,
            vocab_size: self.vocab_size,
            norm_eps: self.rms_norm_eps.unwrap_or(1e-6),
            activation: Activation::parse(self.hidden_act.as_deref().unwrap_or("silu"))?,
            rope: Some(RopeConfig {
                theta,
                scaling,
                dim: head_dim,
                interleaved: false,
            }),
            local_rope: None,
            max_position_embeddings: self.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or(false),
            qkv_bias: self.model_type == "qwen2" || self.attention_bias.unwrap_or(false),
            sliding_window,
            layer_types: uniform_layers(self.num_hidden_layers, sliding_window.is_some()),
            attention_scale: 1.0 / (head_dim as f64).sqrt(),
            gated_mlp: true,
            bos_token_id: self.bos_token_id,
            eos_token_ids: OneOrMany::ids(self.eos_token_id),
            model_type: self.model_type,
        })
    }
}

impl Family for Llama {
    fn name(&self) -> &'static str {
        "llama"
    }

    fn hf_config(&self, json: &serde_json::Value) -> Result<ModelConfig> {
        Keys::deserialize(json)?.into_config()
    }

    fn gguf_config(&self, file: &GgufFile, arch: &str) -> Result<ModelConfig> {
        let path = file.path.display();
        let key = |k: &str| format!("{arch}.{k}");
        if file.tensor_info("rope_freqs.weight").is_some() {
            bail!("{path}: per-frequency rope factors (tensor `rope_freqs.weight`, Llama 3.1 style) are not supported yet");
        }
        let heads = file.required_usize(&key("attention.head_count"))?;
        let hidden = file.required_usize(&key("embedding_length"))?;
        let head_dim = file.uint(&key("attention.key_length"))?.map(|d| d as usize);
        if let Some(rot) = file.uint(&key("rope.dimension_count"))? {
            let full = head_dim.unwrap_or(hidden / heads.max(1));
            if rot as usize != full {
                bail!(
                    "{path}: {} = {rot} (partial rotary) is not supported; head dim is {full}",
                    key("rope.dimension_count")
                );
            }
        }
        let rope_scaling = match file.string(&key("rope.scaling.type"))? {
            None | Some("none") => None,
            Some(kind) => Some(RawRope {
                rope_type: Some(kind.to_string()),
                factor: file.float(&key("rope.scaling.factor"))?,
                ..RawRope::default()
            }),
        };
        let tokens = file.special_tokens()?;
        Keys {
            model_type: arch.to_string(),
            hidden_size: hidden,
            intermediate_size: file.required_usize(&key("feed_forward_length"))?,
            num_hidden_layers: file.required_usize(&key("block_count"))?,
            num_attention_heads: heads,
            num_key_value_heads: file
                .uint(&key("attention.head_count_kv"))?
                .map(|v| v as usize),
            head_dim,
            vocab_size: file.vocab_size(arch)?,
            rms_norm_eps: file.float(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta: file.float(&key("rope.freq_base"))?,
            rope_scaling,
            max_position_embeddings: file.uint(&key("context_length"))?.map(|v| v as usize),
            tie_word_embeddings: Some(file.tensor_info("output.weight").is_none()),
            attention_bias: Some(file.tensor_info("blk.0.attn_q.bias").is_some()),
            hidden_act: Some("silu".into()),
            bos_token_id: tokens.bos,
            eos_token_id: Some(OneOrMany::Many(tokens.eos)),
            ..Keys::default()
        }
        .into_config()
        .and_then(ModelConfig::validate)
        .with_context(|| format!("{path}: metadata does not describe a model we can run"))
    }

    fn gguf_tensor_name(&self, hf: &str) -> Option<String> {
        const BLOCK: &[(&str, &str)] = &[
            ("input_layernorm", "attn_norm"),
            ("post_attention_layernorm", "ffn_norm"),
            ("self_attn.q_proj", "attn_q"),
            ("self_attn.k_proj", "attn_k"),
            ("self_attn.v_proj", "attn_v"),
            ("self_attn.o_proj", "attn_output"),
            ("mlp.gate_proj", "ffn_gate"),
            ("mlp.up_proj", "ffn_up"),
            ("mlp.down_proj", "ffn_down"),
        ];
        crate::engine::gguf::names::llama_cpp_name(hf, BLOCK)
    }

    fn gguf_permutes_qk(&self, arch: &str) -> bool {
        arch == "llama"
    }

    fn build(&self, weights: &dyn WeightSource, c: &ModelConfig) -> Result<ModelParts> {
        let h = c.hidden_size;
        let ropes = Ropes::new(c, weights)?;
        let blocks = (0..c.num_hidden_layers)
            .map(|index| {
                let p = format!("model.layers.{index}");
                let attn = format!("{p}.self_attn");
                // Llama's `attention_bias` covers o_proj too; Qwen2's biases stop at v.
                let o_bias = weights.contains(&format!("{attn}.o_proj.bias"));
                let projections = projections(weights, c, &attn, PROJECTIONS, c.qkv_bias, o_bias)?;
                let mlp = format!("{p}.mlp");
                let block = SequentialBlock {
                    attention_norm: Norm::rms(
                        weights,
                        &format!("{p}.input_layernorm"),
                        h,
                        c.norm_eps,
                    )?,
                    attention: attention_of_layer(c, index, projections, &ropes)?,
                    attention_out_norm: None,
                    mlp_norm: Norm::rms(
                        weights,
                        &format!("{p}.post_attention_layernorm"),
                        h,
                        c.norm_eps,
                    )?,
                    mlp: gated_mlp(weights, c, &mlp)?,
                    mlp_out_norm: None,
                };
                Ok(Box::new(block) as Box<dyn Block>)
            })
            .collect::<Result<Vec<_>>>()?;
        let table = weights.matrix("model.embed_tokens.weight", c.vocab_size, h)?;
        let embedding = Embedding::new(table, weights.dtype(), weights.device());
        let head = LmHead::new(
            Norm::rms(weights, "model.norm", h, c.norm_eps)?,
            super::head_matrix(weights, c, &embedding, "lm_head.weight")?,
            None,
        );
        Ok(ModelParts {
            embedding,
            blocks,
            head,
        })
    }
}
