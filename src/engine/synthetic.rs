//! Random-weight models in Hugging Face layout, for tests and benchmarks.
//!
//! No model hub is reachable, so tests build the models they need: a tiny one to check hook
//! order and KV caching, a 30 × 576 one (the SmolLM2-135M shape) to benchmark, and sharded
//! variants to exercise `model.safetensors.index.json`.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Shape of a synthetic Llama-style model.
#[derive(Debug, Clone)]
pub struct SyntheticSpec {
    pub model_type: &'static str,
    pub num_layers: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Weight standard deviation (HF `initializer_range`).
    pub init_std: f32,
    pub seed: u64,
}

impl SyntheticSpec {
    /// A model small enough to build in milliseconds.
    pub fn tiny(num_layers: usize) -> Self {
        Self {
            model_type: "llama",
            num_layers,
            hidden_size: 32,
            intermediate_size: 64,
            num_heads: 4,
            num_kv_heads: 2,
            vocab_size: 4096,
            max_position_embeddings: 256,
            tie_word_embeddings: false,
            init_std: 0.2,
            seed: 1,
        }
    }

    /// SmolLM2-135M's shape: 30 layers × 576 hidden, 9 / 3 heads, 1536 MLP. The vocabulary is
    /// the shared 4,096-token tokenizer's, so any prompt can be tokenized.
    pub fn smollm2_135m_shape() -> Self {
        Self {
            model_type: "llama",
            num_layers: 30,
            hidden_size: 576,
            intermediate_size: 1536,
            num_heads: 9,
            num_kv_heads: 3,
            vocab_size: 4096,
            max_position_embeddings: 2048,
            tie_word_embeddings: true,
            init_std: 0.02,
            seed: 135,
        }
    }

    pub fn config_json(&self) -> serde_json::Value {
        json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": self.model_type,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "hidden_act": "silu",
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": 0,
            "eos_token_id": 0,
            "torch_dtype": "float32",
        })
    }

    /// Every weight tensor by its HF name.
    pub fn tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let head_dim = self.hidden_size / self.num_heads;
        let (h, q, kv, i) = (
            self.hidden_size,
            self.num_heads * head_dim,
            self.num_kv_heads * head_dim,
            self.intermediate_size,
        );
        let mut out = BTreeMap::new();
        let mut normal = |name: String, shape: (usize, usize)| -> Result<()> {
            let values: Vec<f32> = (0..shape.0 * shape.1)
                .map(|_| gaussian(&mut rng) * self.init_std)
                .collect();
            out.insert(name, Tensor::from_vec(values, shape, &Device::Cpu)?);
            Ok(())
        };
        normal("model.embed_tokens.weight".into(), (self.vocab_size, h))?;
        for l in 0..self.num_layers {
            let p = format!("model.layers.{l}");
            normal(format!("{p}.self_attn.q_proj.weight"), (q, h))?;
            normal(format!("{p}.self_attn.k_proj.weight"), (kv, h))?;
            normal(format!("{p}.self_attn.v_proj.weight"), (kv, h))?;
            normal(format!("{p}.self_attn.o_proj.weight"), (h, q))?;
            normal(format!("{p}.mlp.gate_proj.weight"), (i, h))?;
            normal(format!("{p}.mlp.up_proj.weight"), (i, h))?;
            normal(format!("{p}.mlp.down_proj.weight"), (h, i))?;
        }
        if !self.tie_word_embeddings {
            normal("lm_head.weight".into(), (self.vocab_size, h))?;
        }
        let ones = Tensor::ones(h, DType::F32, &Device::Cpu)?;
        for l in 0..self.num_layers {
            out.insert(
                format!("model.layers.{l}.input_layernorm.weight"),
                ones.clone(),
            );
            out.insert(
                format!("model.layers.{l}.post_attention_layernorm.weight"),
                ones.clone(),
            );
        }
        out.insert("model.norm.weight".into(), ones);
        Ok(out)
    }

    /// Write config.json, the weights (split into `shards` files with an index when > 1) and
    /// a copy of `tokenizer` into `dir`.
    pub fn write_dir(&self, dir: &Path, tokenizer: &Path, shards: usize) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_string_pretty(&self.config_json())?,
        )?;
        std::fs::copy(tokenizer, dir.join("tokenizer.json"))
            .with_context(|| format!("cannot copy tokenizer {}", tokenizer.display()))?;
        let tensors = self.tensors()?;
        if shards <= 1 {
            let map: HashMap<String, Tensor> = tensors.into_iter().collect();
            candle_core::safetensors::save(&map, dir.join("model.safetensors"))?;
            return Ok(());
        }
        let names: Vec<String> = tensors.keys().cloned().collect();
        let per_shard = names.len().div_ceil(shards);
        let mut weight_map = BTreeMap::new();
        for (s, chunk) in names.chunks(per_shard).enumerate() {
            let file = format!("model-{:05}-of-{:05}.safetensors", s + 1, shards);
            let map: HashMap<String, Tensor> = chunk
                .iter()
                .map(|n| (n.clone(), tensors[n].clone()))
                .collect();
            candle_core::safetensors::save(&map, dir.join(&file))?;
            for n in chunk {
                weight_map.insert(n.clone(), file.clone());
            }
        }
        let index = json!({"metadata": {}, "weight_map": weight_map});
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            serde_json::to_string_pretty(&index)?,
        )?;
        Ok(())
    }
}

/// Standard normal draw (Box–Muller), so weights depend only on the seed.
fn gaussian(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

impl SyntheticSpec {
    /// Build the model in memory (no files), for unit tests.
    pub fn build(&self, dtype: DType) -> Result<super::DecoderModel> {
        let config = super::ModelConfig::from_json(&self.config_json().to_string())?;
        let tensors: HashMap<String, Tensor> = self.tensors()?.into_iter().collect();
        let vb = candle_nn::VarBuilder::from_tensors(tensors, dtype, &Device::Cpu);
        super::DecoderModel::load(vb, config)
    }
}
