//! A [`ModelConfig`] from GGUF metadata (`{arch}.block_count`, `{arch}.rope.freq_base`, …),
//! mapped onto `config.json`'s fields so both formats share one validation.

use super::GgufFile;
use crate::engine::config::{ModelConfig, OneOrMany, RawConfig, RawRope};
use anyhow::{bail, Context, Result};

/// GGUF `general.architecture` values the engine runs, and the HF `model_type` each maps to.
const ARCHITECTURES: &[(&str, &str)] = &[("llama", "llama"), ("qwen2", "qwen2")];

pub fn model_config(file: &GgufFile) -> Result<ModelConfig> {
    let path = file.path.display();
    let arch = file
        .string("general.architecture")?
        .with_context(|| format!("{path}: missing metadata `general.architecture`"))?;
    let Some(&(_, model_type)) = ARCHITECTURES.iter().find(|(a, _)| *a == arch) else {
        let known: Vec<_> = ARCHITECTURES.iter().map(|(a, _)| *a).collect();
        bail!(
            "{path}: general.architecture = {arch:?} is not supported (supported: {})",
            known.join(", ")
        );
    };
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
    let embedding = file
        .tensor_info("token_embd.weight")
        .with_context(|| format!("{path}: no tensor `token_embd.weight`"))?;
    let vocab_size = match file.uint(&key("vocab_size"))? {
        Some(v) => v as usize,
        None => embedding.shape.dims()[0],
    };
    let rope_scaling = match file.string(&key("rope.scaling.type"))? {
        None | Some("none") => None,
        Some(kind) => Some(RawRope {
            rope_type: Some(kind.to_string()),
            factor: file.float(&key("rope.scaling.factor"))?,
            ..RawRope::default()
        }),
    };
    let token = |k: &str| -> Result<Option<u32>> {
        Ok(file.uint(&format!("tokenizer.ggml.{k}"))?.map(|v| v as u32))
    };
    // End of text, end of turn and end of message all end a generation.
    let mut eos: Vec<u32> = ["eos_token_id", "eot_token_id", "eom_token_id"]
        .iter()
        .filter_map(|k| token(k).transpose())
        .collect::<Result<_>>()?;
    eos.dedup();
    let raw = RawConfig {
        model_type: Some(model_type.to_string()),
        hidden_size: hidden,
        intermediate_size: file.required_usize(&key("feed_forward_length"))?,
        num_hidden_layers: file.required_usize(&key("block_count"))?,
        num_attention_heads: heads,
        num_key_value_heads: file
            .uint(&key("attention.head_count_kv"))?
            .map(|v| v as usize),
        head_dim,
        vocab_size,
        rms_norm_eps: file.float(&key("attention.layer_norm_rms_epsilon"))?,
        rope_theta: file.float(&key("rope.freq_base"))?,
        rope_scaling,
        max_position_embeddings: file.uint(&key("context_length"))?.map(|v| v as usize),
        tie_word_embeddings: Some(file.tensor_info("output.weight").is_none()),
        attention_bias: Some(file.tensor_info("blk.0.attn_q.bias").is_some()),
        hidden_act: Some("silu".into()),
        bos_token_id: token("bos_token_id")?,
        eos_token_id: Some(OneOrMany::Many(eos)),
        ..RawConfig::default()
    };
    ModelConfig::from_raw(raw)
        .with_context(|| format!("{path}: metadata does not describe a model we can run"))
}
