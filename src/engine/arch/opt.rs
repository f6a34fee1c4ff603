//! OPT (the AdaInfer paper's second family): learned positions (row `p + 2`), pre-LayerNorm
//! blocks with biases everywhere, ReLU MLP, tied head. Safetensors only (llama.cpp has no OPT).

use super::{
    attention_of_layer, head_matrix, projections, uniform_layers, Family, ModelParts, Ropes,
};
use crate::engine::config::{positive, Activation, ModelConfig, OneOrMany};
use crate::engine::layers::block::{Block, SequentialBlock};
use crate::engine::layers::embedding::{Embedding, LearnedPositions};
use crate::engine::layers::head::LmHead;
use crate::engine::layers::linear::linear;
use crate::engine::layers::mlp::Mlp;
use crate::engine::layers::norm::Norm;
use crate::engine::weights::WeightSource;
use anyhow::{bail, Result};
use serde::Deserialize;

#[derive(Debug)]
pub struct Opt;

/// OPT's position table starts two rows in (fairseq kept rows for padding).
const POSITION_OFFSET: usize = 2;
/// `nn.LayerNorm`'s default; OPT configs do not name it.
const LAYER_NORM_EPS: f64 = 1e-5;

#[derive(Debug, Deserialize)]
struct Keys {
    model_type: String,
    hidden_size: usize,
    ffn_dim: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    vocab_size: usize,
    max_position_embeddings: usize,
    activation_function: Option<String>,
    do_layer_norm_before: Option<bool>,
    word_embed_proj_dim: Option<usize>,
    #[serde(rename = "_remove_final_layer_norm")]
    remove_final_layer_norm: Option<bool>,
    enable_bias: Option<bool>,
    layer_norm_elementwise_affine: Option<bool>,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<OneOrMany>,
}

impl Family for Opt {
    fn name(&self) -> &'static str {
        "opt"
    }

    fn hf_config(&self, json: &serde_json::Value) -> Result<ModelConfig> {
        let k = Keys::deserialize(json)?;
        // The variants OPT-350m introduced (post-norm, a projected embedding) are not built.
        if k.do_layer_norm_before == Some(false) {
            bail!(
                "do_layer_norm_before = false (post-LayerNorm OPT, e.g. opt-350m) is not supported"
            );
        }
        if k.word_embed_proj_dim.is_some_and(|d| d != k.hidden_size) {
            bail!("word_embed_proj_dim differs from hidden_size (projected embeddings) and is not supported");
        }
        if k.remove_final_layer_norm == Some(true) {
            bail!("_remove_final_layer_norm = true is not supported");
        }
        if k.layer_norm_elementwise_affine == Some(false) {
            bail!("layer_norm_elementwise_affine = false is not supported");
        }
        let heads = positive("num_attention_heads", k.num_attention_heads)?;
        let head_dim = ModelConfig::head_dim_or_default(None, k.hidden_size, heads)?;
        Ok(ModelConfig {
            family: &Opt,
            hidden_size: k.hidden_size,
            intermediate_size: k.ffn_dim,
            num_hidden_layers: k.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: heads,
            head_dim,
            vocab_size: k.vocab_size,
            norm_eps: LAYER_NORM_EPS,
            activation: Activation::parse(k.activation_function.as_deref().unwrap_or("relu"))?,
            rope: None,
            local_rope: None,
            max_position_embeddings: k.max_position_embeddings,
            tie_word_embeddings: k.tie_word_embeddings.unwrap_or(true),
            qkv_bias: k.enable_bias.unwrap_or(true),
            sliding_window: None,
            layer_types: uniform_layers(k.num_hidden_layers, false),
            attention_scale: 1.0 / (head_dim as f64).sqrt(),
            gated_mlp: false,
            bos_token_id: k.bos_token_id,
            eos_token_ids: OneOrMany::ids(k.eos_token_id),
            model_type: k.model_type,
        })
    }

    fn build(&self, weights: &dyn WeightSource, c: &ModelConfig) -> Result<ModelParts> {
        let (h, i, bias, eps) = (c.hidden_size, c.intermediate_size, c.qkv_bias, c.norm_eps);
        let ropes = Ropes::new(c, weights)?;
        let blocks = (0..c.num_hidden_layers)
            .map(|index| {
                let p = format!("model.decoder.layers.{index}");
                let attn = format!("{p}.self_attn");
                let names = ["q_proj", "k_proj", "v_proj", "out_proj"];
                let projections = projections(weights, c, &attn, names, bias, bias)?;
                let block = SequentialBlock {
                    attention_norm: Norm::layer(
                        weights,
                        &format!("{p}.self_attn_layer_norm"),
                        h,
                        eps,
                    )?,
                    attention: attention_of_layer(c, index, projections, &ropes)?,
                    attention_out_norm: None,
                    mlp_norm: Norm::layer(weights, &format!("{p}.final_layer_norm"), h, eps)?,
                    mlp: Mlp::plain(
                        linear(weights, &p, "fc1", h, i, bias)?,
                        linear(weights, &p, "fc2", i, h, bias)?,
                        c.activation,
                    ),
                    mlp_out_norm: None,
                };
                Ok(Box::new(block) as Box<dyn Block>)
            })
            .collect::<Result<Vec<_>>>()?;
        let table = weights.matrix("model.decoder.embed_tokens.weight", c.vocab_size, h)?;
        let positions = LearnedPositions {
            table: weights.tensor(
                "model.decoder.embed_positions.weight",
                &[c.max_position_embeddings + POSITION_OFFSET, h],
            )?,
            offset: POSITION_OFFSET,
        };
        let embedding =
            Embedding::new(table, weights.dtype(), weights.device()).with_positions(positions);
        let head = LmHead::new(
            Norm::layer(weights, "model.decoder.final_layer_norm", h, eps)?,
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
