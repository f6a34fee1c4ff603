//! Writes a Hugging Face llama / qwen2 directory as a GGUF file the way llama.cpp's
//! `convert_hf_to_gguf.py` lays it out (tensor names, rotary row order of Q/K for `llama`,
//! metadata keys, byte-level BPE tokenizer), with block matrices quantized by candle.
//!
//! The tests use it to make GGUF files of the shared random models in every quantization type
//! without Python; `tests/gguf.rs` also checks files made by llama.cpp's converter when present.

use crate::engine::config::{LayerType, ModelConfig, RopeScaling};
use crate::engine::ModelFiles;
use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Write `dir` to `out`, block matrices as `matrix_type` (norms and biases stay f32; a matrix
/// whose rows do not split into `matrix_type`'s blocks falls back to Q8_0, then F32, as
/// llama-quantize falls back).
pub fn write_hf_dir_as_gguf(dir: &Path, out: &Path, matrix_type: GgmlDType) -> Result<()> {
    let files = ModelFiles::locate(dir)?;
    let config = ModelConfig::from_file(&files.config)?;
    let arch = match config.model_type.as_str() {
        "llama" => "llama",
        "qwen2" => "qwen2",
        "gemma3_text" => "gemma3",
        other => bail!("no GGUF layout for model_type {other:?}"),
    };
    let family = config.family;
    let mut metadata = model_metadata(&config, arch);
    metadata.extend(tokenizer_metadata(&files.tokenizer, &config)?);
    let mut tensors = Vec::new();
    for path in &files.weights {
        let all = candle_core::safetensors::load(path, &Device::Cpu)?;
        for (name, tensor) in all {
            let gguf = family
                .gguf_tensor_name(&name)
                .with_context(|| format!("no GGUF name for {name}"))?;
            let mut t = tensor.to_dtype(DType::F32)?;
            if arch == "gemma3" && name.ends_with("norm.weight") {
                // llama.cpp's converter stores Gemma's `1 + w`.
                t = (t + 1.0)?;
            }
            if family.gguf_permutes_qk(arch) {
                if name.contains(".q_proj.") {
                    t = to_llama_cpp_rows(&t, config.num_attention_heads)?;
                } else if name.contains(".k_proj.") {
                    t = to_llama_cpp_rows(&t, config.num_key_value_heads)?;
                }
            }
            let dtype = if t.rank() == 2 {
                block_type(matrix_type, t.dim(1)?)
            } else {
                GgmlDType::F32
            };
            tensors.push((gguf, QTensor::quantize(&t, dtype)?));
        }
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut file =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let meta: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tens: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut file, &meta, &tens)?;
    Ok(())
}

fn block_type(wanted: GgmlDType, cols: usize) -> GgmlDType {
    [wanted, GgmlDType::Q8_0, GgmlDType::F32]
        .into_iter()
        .find(|t| cols % t.block_size() == 0)
        .unwrap_or(GgmlDType::F32)
}

/// HF's half-split rotary rows → llama.cpp's interleaved ones, per head (the converter's
/// `reshape(heads, 2, half, ..).swapaxes(1, 2)`).
fn to_llama_cpp_rows(t: &Tensor, heads: usize) -> Result<Tensor> {
    let rows = t.dim(0)?;
    let rest: Vec<usize> = t.dims()[1..].to_vec();
    let half = rows / heads / 2;
    let mut shape = vec![heads, 2, half];
    shape.extend(&rest);
    Ok(t.reshape(shape)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(t.dims())?)
}

fn model_metadata(c: &ModelConfig, arch: &str) -> Vec<(String, Value)> {
    let k = |s: &str| format!("{arch}.{s}");
    let u = |v: usize| Value::U32(v as u32);
    let mut m = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.alignment".into(), Value::U32(32)),
        (k("block_count"), u(c.num_hidden_layers)),
        (k("context_length"), u(c.max_position_embeddings)),
        (k("embedding_length"), u(c.hidden_size)),
        (k("feed_forward_length"), u(c.intermediate_size)),
        (k("attention.head_count"), u(c.num_attention_heads)),
        (k("attention.head_count_kv"), u(c.num_key_value_heads)),
        (k("attention.key_length"), u(c.head_dim)),
        (k("attention.value_length"), u(c.head_dim)),
        (
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(c.norm_eps as f32),
        ),
        (k("vocab_size"), u(c.vocab_size)),
    ];
    if let Some(rope) = &c.rope {
        m.push((k("rope.dimension_count"), u(rope.dim)));
        m.push((k("rope.freq_base"), Value::F32(rope.theta as f32)));
        if let RopeScaling::Linear { factor } = rope.scaling {
            m.push((k("rope.scaling.type"), Value::String("linear".into())));
            m.push((k("rope.scaling.factor"), Value::F32(factor as f32)));
        }
    }
    if let Some(window) = c.sliding_window {
        m.push((k("attention.sliding_window"), u(window)));
        // llama.cpp assumes every sixth block global unless told, per block, which slide.
        let sliding = c
            .layer_types
            .iter()
            .map(|t| Value::Bool(*t == LayerType::Sliding));
        m.push((
            k("attention.sliding_window_pattern"),
            Value::Array(sliding.collect()),
        ));
    }
    if let Some(local) = &c.local_rope {
        m.push((k("rope.freq_base_swa"), Value::F32(local.theta as f32)));
    }
    if let Some(bos) = c.bos_token_id {
        m.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(bos)));
    }
    if let Some(&eos) = c.eos_token_ids.first() {
        m.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(eos)));
    }
    m
}

/// `tokenizer.ggml.*` for a byte-level BPE `tokenizer.json` (tokens by id, merges, types).
fn tokenizer_metadata(path: &Path, c: &ModelConfig) -> Result<Vec<(String, Value)>> {
    let text = std::fs::read_to_string(path)?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let model = &json["model"];
    if model["type"] != "BPE" {
        bail!(
            "{}: only BPE tokenizers can be written to GGUF here",
            path.display()
        );
    }
    let mut by_id: HashMap<u32, (String, i32)> = HashMap::new();
    for (token, id) in model["vocab"].as_object().context("model.vocab")? {
        by_id.insert(id.as_u64().context("vocab id")? as u32, (token.clone(), 1));
    }
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        let id = added["id"].as_u64().context("added token id")? as u32;
        let special = added["special"].as_bool().unwrap_or(false);
        let content = added["content"].as_str().context("added token content")?;
        by_id.insert(id, (content.to_string(), if special { 3 } else { 4 }));
    }
    let n = c.vocab_size.max(by_id.len());
    let mut tokens = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    for id in 0..n as u32 {
        // Padding rows of the embedding get placeholder tokens, as the converter writes.
        let (token, kind) = by_id
            .remove(&id)
            .unwrap_or_else(|| (format!("[PAD{id}]"), 5));
        tokens.push(Value::String(token));
        types.push(Value::I32(kind));
    }
    let merges = model["merges"]
        .as_array()
        .context("model.merges")?
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => Ok(Value::String(s.clone())),
            serde_json::Value::Array(p) if p.len() == 2 => Ok(Value::String(format!(
                "{} {}",
                p[0].as_str().unwrap_or_default(),
                p[1].as_str().unwrap_or_default()
            ))),
            other => bail!("unexpected merge {other}"),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        // llama.cpp's name for the plain GPT-2 regex (`ByteLevel(use_regex = true)`).
        ("tokenizer.ggml.pre".into(), Value::String("gpt-2".into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
    ])
}
