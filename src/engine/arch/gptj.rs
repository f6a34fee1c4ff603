//! GPT-J (the paper's Appendix C family): attention and MLP side by side on one LayerNorm,
//! GPT-J's interleaved rotary on the first `rotary_dim` features of each head, GELU (tanh),
//! an untied head with a bias. Safetensors only.

use super::{
    attention_of_layer, head_matrix, projections, uniform_layers, Family, ModelParts, Ropes,
};
use crate::engine::config::{
    positive, Activation, ModelConfig, OneOrMany, RopeConfig, RopeScaling,
};
use crate::engine::layers::block::{Block, ParallelBlock};
use crate::engine::layers::embedding::Embedding;
use crate::engine::layers::head::LmHead;
use crate::engine::layers::linear::linear;
use crate::engine::layers::mlp::Mlp;
use crate::engine::layers::norm::Norm;
use crate::engine::weights::WeightSource;
use anyhow::Result;
use serde::Deserialize;

#[derive(Debug)]
pub struct GptJ;

#[derive(Debug, Deserialize)]
struct Keys {
    model_type: String,
    n_embd: usize,
    n_head: usize,
    n_layer: usize,
    n_positions: usize,
    n_inner: Option<usize>,
    rotary_dim: Option<usize>,
    layer_norm_epsilon: Option<f64>,
    activation_function: Option<String>,
    vocab_size: usize,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<OneOrMany>,
}

impl Family for GptJ {
    fn name(&self) -> &'static str {
        "gptj"
    }

    fn hf_config(&self, json: &serde_json::Value) -> Result<ModelConfig> {
        let k = Keys::deserialize(json)?;
        let heads = positive("n_head", k.n_head)?;
        let head_dim = ModelConfig::head_dim_or_default(None, k.n_embd, heads)?;
        Ok(ModelConfig {
            family: &GptJ,
            hidden_size: k.n_embd,
            intermediate_size: k.n_inner.unwrap_or(4 * k.n_embd),
            num_hidden_layers: k.n_layer,
            num_attention_heads: heads,
            num_key_value_heads: heads,
            head_dim,
            vocab_size: k.vocab_size,
            norm_eps: k.layer_norm_epsilon.unwrap_or(1e-5),
            activation: Activation::parse(k.activation_function.as_deref().unwrap_or("gelu_new"))?,
            rope: Some(RopeConfig {
                theta: 10_000.0,
                scaling: RopeScaling::None,
                dim: k.rotary_dim.unwrap_or(head_dim),
                interleaved: true,
            }),
            local_rope: None,
            max_position_embeddings: k.n_positions,
            tie_word_embeddings: k.tie_word_embeddings.unwrap_or(false),
            qkv_bias: false,
            sliding_window: None,
            layer_types: uniform_layers(k.n_layer, false),
            attention_scale: 1.0 / (head_dim as f64).sqrt(),
            gated_mlp: false,
            bos_token_id: k.bos_token_id,
            eos_token_ids: OneOrMany::ids(k.eos_token_id),
            model_type: k.model_type,
        })
    }

    fn build(&self, weights: &dyn WeightSource, c: &ModelConfig) -> Result<ModelParts> {
        let (h, i, eps) = (c.hidden_size, c.intermediate_size, c.norm_eps);
        let ropes = Ropes::new(c, weights)?;
        let blocks = (0..c.num_hidden_layers)
            .map(|index| {
                let p = format!("transformer.h.{index}");
                let attn = format!("{p}.attn");
                let names = ["q_proj", "k_proj", "v_proj", "out_proj"];
                let projections = projections(weights, c, &attn, names, false, false)?;
                let mlp = format!("{p}.mlp");
                let block = ParallelBlock {
                    norm: Norm::layer(weights, &format!("{p}.ln_1"), h, eps)?,
                    attention: attention_of_layer(c, index, projections, &ropes)?,
                    mlp: Mlp::plain(
                        linear(weights, &mlp, "fc_in", h, i, true)?,
                        linear(weights, &mlp, "fc_out", i, h, true)?,
                        c.activation,
                    ),
                };
                Ok(Box::new(block) as Box<dyn Block>)
            })
            .collect::<Result<Vec<_>>>()?;
        let table = weights.matrix("transformer.wte.weight", c.vocab_size, h)?;
        let embedding = Embedding::new(table, weights.dtype(), weights.device());
        let bias = if c.tie_word_embeddings {
            None
        } else {
            Some(weights.tensor("lm_head.bias", &[c.vocab_size])?)
        };
        let head = LmHead::new(
            Norm::layer(weights, "transformer.ln_f", h, eps)?,
            head_matrix(weights, c, &embedding, "lm_head.weight")?,
            bias,
        );
        Ok(ModelParts {
            embedding,
            blocks,
            head,
        })
    }
}
