//! The model families: one file each, and [`FAMILIES`], the one table that says which
//! `config.json` `model_type` and GGUF `general.architecture` values each family builds.
//!
//! A family says three things (the [`Family`] trait): how its config reads into a
//! [`ModelConfig`], where its weights are (HF names; llama.cpp's names for GGUF files), and how
//! its embedding, blocks and head are built from the shared parts in `layers/`. Everything
//! else — the pass loop, hooks, KV caches and fills, batching, speculative decoding — is the
//! same for every family (`model.rs`).
//!
//! Adding a family: a new file here implementing [`Family`], and a line in [`FAMILIES`].

mod gemma3;
mod gptj;
mod llama;
mod opt;

use super::config::{LayerType, ModelConfig, RopeConfig};
use super::gguf::GgufFile;
use super::layers::attention::{Attention, Heads};
use super::layers::block::Block;
use super::layers::embedding::Embedding;
use super::layers::head::LmHead;
use super::layers::linear::{linear, Linear};
use super::layers::mlp::Mlp;
use super::rope::Rope;
use super::weights::WeightSource;
use anyhow::{bail, Context, Result};
use std::sync::Arc;

/// What a family builds: the model minus the family-agnostic loop.
pub struct ModelParts {
    pub(crate) embedding: Embedding,
    pub(crate) blocks: Vec<Box<dyn Block>>,
    pub(crate) head: LmHead,
}

pub trait Family: Sync + std::fmt::Debug {
    /// Short name for messages and the README's table.
    fn name(&self) -> &'static str;

    /// The config from a parsed `config.json`.
    fn hf_config(&self, json: &serde_json::Value) -> Result<ModelConfig>;

    /// The config from a GGUF file's metadata (`general.architecture` = `arch`).
    fn gguf_config(&self, file: &GgufFile, arch: &str) -> Result<ModelConfig> {
        let _ = arch;
        bail!(
            "{}: the {} family has no GGUF support",
            file.path.display(),
            self.name()
        )
    }

    /// llama.cpp's name for an HF weight name.
    fn gguf_tensor_name(&self, hf: &str) -> Option<String> {
        let _ = hf;
        None
    }

    /// Whether llama.cpp's converter reordered Q/K rows into its interleaved rotary form for
    /// this `general.architecture` (they are put back on load).
    fn gguf_permutes_qk(&self, arch: &str) -> bool {
        let _ = arch;
        false
    }

    /// Embedding, blocks and head from weights under HF names.
    fn build(&self, weights: &dyn WeightSource, config: &ModelConfig) -> Result<ModelParts>;
}

/// One row of the table.
pub struct FamilyEntry {
    /// HF `model_type` values.
    pub model_types: &'static [&'static str],
    /// GGUF `general.architecture` values (none: safetensors only).
    pub gguf_architectures: &'static [&'static str],
    pub family: &'static dyn Family,
}

pub static FAMILIES: &[FamilyEntry] = &[
    FamilyEntry {
        model_types: &["llama", "mistral", "qwen2"],
        gguf_architectures: &["llama", "qwen2"],
        family: &llama::Llama,
    },
    FamilyEntry {
        model_types: &["gemma3_text"],
        gguf_architectures: &["gemma3"],
        family: &gemma3::Gemma3,
    },
    FamilyEntry {
        model_types: &["opt"],
        gguf_architectures: &[],
        family: &opt::Opt,
    },
    FamilyEntry {
        model_types: &["gptj"],
        gguf_architectures: &[],
        family: &gptj::GptJ,
    },
];

fn known(pick: impl Fn(&FamilyEntry) -> &'static [&'static str]) -> String {
    FAMILIES
        .iter()
        .flat_map(pick)
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

/// The family of an HF `model_type`.
pub fn for_model_type(model_type: &str) -> Result<&'static dyn Family> {
    match FAMILIES
        .iter()
        .find(|e| e.model_types.contains(&model_type))
    {
        Some(e) => Ok(e.family),
        None => bail!(
            "unsupported model_type {model_type:?} in config.json (supported: {})",
            known(|e| e.model_types)
        ),
    }
}

/// The family of a GGUF `general.architecture`.
pub fn for_gguf_architecture(arch: &str) -> Result<&'static dyn Family> {
    match FAMILIES
        .iter()
        .find(|e| e.gguf_architectures.contains(&arch))
    {
        Some(e) => Ok(e.family),
        None => bail!(
            "general.architecture = {arch:?} is not supported (supported: {})",
            known(|e| e.gguf_architectures)
        ),
    }
}

/// One rotary table per distinct rotary config, shared by the blocks that use it.
pub(crate) struct Ropes(Vec<(RopeConfig, Arc<Rope>)>);

impl Ropes {
    pub(crate) fn new(c: &ModelConfig, weights: &dyn WeightSource) -> Result<Self> {
        let mut ropes: Vec<(RopeConfig, Arc<Rope>)> = Vec::new();
        for spec in c.rope.iter().chain(&c.local_rope) {
            if !ropes.iter().any(|(s, _)| s == spec) {
                let rope = Rope::new(
                    spec,
                    c.max_position_embeddings,
                    weights.dtype(),
                    weights.device(),
                )?;
                ropes.push((spec.clone(), Arc::new(rope)));
            }
        }
        Ok(Self(ropes))
    }

    fn of_layer(&self, c: &ModelConfig, index: usize) -> Option<Arc<Rope>> {
        let spec = c.rope_of_layer(index)?;
        self.0
            .iter()
            .find(|(s, _)| s == spec)
            .map(|(_, r)| r.clone())
    }
}

/// Block `index`'s attention from its q, k, v and o projections, with the rotary table,
/// score scale and window the config gives that block.
pub(crate) fn attention_of_layer(
    c: &ModelConfig,
    index: usize,
    projections: [Linear; 4],
    ropes: &Ropes,
) -> Result<Attention> {
    let heads = Heads {
        num_heads: c.num_attention_heads,
        num_kv_heads: c.num_key_value_heads,
        head_dim: c.head_dim,
    };
    Attention::new(
        projections,
        heads,
        ropes.of_layer(c, index),
        c.attention_scale,
        c.window_of_layer(index),
    )
}

/// Block attention's q, k, v and o projections under `prefix`, named `names` (`q_proj`, …),
/// sized by the config's heads.
pub(crate) fn projections(
    weights: &dyn WeightSource,
    c: &ModelConfig,
    prefix: &str,
    names: [&str; 4],
    qkv_bias: bool,
    o_bias: bool,
) -> Result<[Linear; 4]> {
    let (h, q, kv) = (
        c.hidden_size,
        c.num_attention_heads * c.head_dim,
        c.num_key_value_heads * c.head_dim,
    );
    let [qn, kn, vn, on] = names;
    Ok([
        linear(weights, prefix, qn, h, q, qkv_bias)?,
        linear(weights, prefix, kn, h, kv, qkv_bias)?,
        linear(weights, prefix, vn, h, kv, qkv_bias)?,
        linear(weights, prefix, on, q, h, o_bias)?,
    ])
}

/// The SiLU / GELU-gated MLP (`gate_proj`, `up_proj`, `down_proj`, no biases) under `prefix`.
pub(crate) fn gated_mlp(weights: &dyn WeightSource, c: &ModelConfig, prefix: &str) -> Result<Mlp> {
    let (h, i) = (c.hidden_size, c.intermediate_size);
    Mlp::gated(
        linear(weights, prefix, "gate_proj", h, i, false)?,
        linear(weights, prefix, "up_proj", h, i, false)?,
        linear(weights, prefix, "down_proj", i, h, false)?,
        i,
        c.activation,
    )
}

/// Every block of the same attention type: the layer types of a family without per-layer ones.
pub(crate) fn uniform_layers(c_layers: usize, sliding: bool) -> Vec<LayerType> {
    let kind = if sliding {
        LayerType::Sliding
    } else {
        LayerType::Full
    };
    vec![kind; c_layers]
}

/// The LM head's matrix: the embedding table when tied, else the weight `name`.
pub(crate) fn head_matrix(
    weights: &dyn WeightSource,
    c: &ModelConfig,
    embedding: &Embedding,
    name: &str,
) -> Result<super::weights::Matrix> {
    if c.tie_word_embeddings {
        return Ok(embedding.table().clone());
    }
    weights
        .matrix(name, c.vocab_size, c.hidden_size)
        .with_context(|| format!("weight {name} (the model's embeddings are not tied)"))
}
