//! The host pipeline: load a model (a Hugging Face directory or a GGUF file) and run it, dense
//! or with hooks. Split the mistral.rs way: `loader` / `gguf` (files → weights through
//! `weights`, quantized matrices in `quant`), `model` (the decoder, and its batched
//! decode step), `generate` (one sequence) / `generate_batch` (several together), and the
//! generation modes (`early_exit` with `kv_fill`, `speculative`, dispatched by `modes`).
//! `rows_matmul` and `threads` are about speed on the CPU.

pub mod arch;
pub mod block_set;
pub mod chat;
pub mod config;
pub mod draft_controller;
pub mod draft_head;
pub mod early_exit;
#[cfg(test)]
mod early_exit_tests;
pub mod generate;
pub mod generate_batch;
pub mod gguf;
pub mod kv_cache;
pub mod kv_fill;
mod layers;
pub mod loader;
pub mod logit_rules;
pub mod lookup_decode;
pub mod model;
pub mod modes;
pub mod ngram_draft;
pub mod quant;
pub mod rope;
mod rows_matmul;
pub mod sampling;
pub mod skip_draft;
pub mod speculative;
#[cfg(test)]
mod speculative_tests;
pub mod synthetic;
#[cfg(test)]
mod tests;
pub mod threads;
pub mod weights;

pub use chat::ChatInfo;
pub use config::ModelConfig;
pub use generate::{FinishReason, Generation, GenerationParams};
pub use kv_cache::KvCache;
pub use loader::{ModelFiles, ModelIdentity, ModelSource};
pub use logit_rules::{LogitRules, LogprobLog, StepLogprobs};
pub use model::{DecoderModel, ExitRecord, LmHead, Outputs, PassOutput};
pub use sampling::{Sampler, SamplingParams};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use std::path::Path;

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `None` ("auto"): f32 for safetensors, the file's own (quantized) types for GGUF.
    /// `Some`: every weight in this dtype (a GGUF file is dequantized to the dense path).
    pub dtype: Option<DType>,
    pub device: Device,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: None,
            device: Device::Cpu,
        }
    }
}

impl LoadOptions {
    pub fn from_names(dtype: &str, device: &str) -> Result<Self> {
        Ok(Self {
            dtype: loader::parse_dtype(dtype)?,
            device: loader::parse_device(device)?,
        })
    }
}

/// A loaded model with its tokenizer: what every command and plugin runs on.
pub struct Engine {
    pub model: DecoderModel,
    pub tokenizer: tokenizers::Tokenizer,
    pub eos_token_ids: Vec<u32>,
    /// Where it was loaded from.
    pub source: ModelSource,
    /// The model's own chat template and the special tokens it names.
    pub chat: ChatInfo,
    pub identity: ModelIdentity,
}

impl Engine {
    /// Load a model directory, or a `.gguf` file.
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Self> {
        if gguf::is_gguf_path(path) {
            Self::load_gguf(path, options)
        } else {
            Self::load_dir(path, options)
        }
    }

    fn load_gguf(path: &Path, options: &LoadOptions) -> Result<Self> {
        let file = gguf::GgufFile::open(path)?;
        let config = gguf::config::model_config(&file)?;
        let tokenizer = gguf::tokenizer::tokenizer_from_gguf(&file.content.metadata)
            .with_context(|| format!("cannot build the tokenizer of {}", path.display()))?;
        let chat = ChatInfo::of_gguf(&file, &config)?;
        let identity = ModelIdentity::of(None, &[path.to_path_buf()], &config)?;
        let weights =
            gguf::weights::GgufWeights::new(&file, &config, options.dtype, &options.device)?;
        let mut eos_token_ids = config.eos_token_ids.clone();
        for id in gguf::tokenizer::end_of_generation_ids(&tokenizer) {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
        let model = DecoderModel::from_weights(&weights, config)
            .with_context(|| format!("cannot load the weights of {}", path.display()))?;
        Ok(Self {
            model,
            tokenizer,
            eos_token_ids,
            source: ModelSource::Gguf(path.to_path_buf()),
            chat,
            identity,
        })
    }

    fn load_dir(dir: &Path, options: &LoadOptions) -> Result<Self> {
        let files = ModelFiles::locate(dir)?;
        let config = ModelConfig::from_file(&files.config)?;
        let tokenizer = tokenizers::Tokenizer::from_file(&files.tokenizer)
            .map_err(|e| anyhow!("cannot load tokenizer {}: {e}", files.tokenizer.display()))?;
        let eos_token_ids = loader::eos_token_ids(&files, &config, &tokenizer)?;
        let identity = ModelIdentity::of(Some(&files.config), &files.weights, &config)?;
        let chat = ChatInfo::of_dir(&files)?;
        let dtype = options.dtype.unwrap_or(DType::F32);
        // SAFETY: the files are memory-mapped read-only; mutating them while loaded is the
        // same hazard every safetensors loader accepts.
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&files.weights, dtype, &options.device) }
                .with_context(|| format!("cannot read weights in {}", dir.display()))?;
        let mut weights = weights::SafetensorsWeights::new(vb);
        if options.dtype.is_none() && options.device.is_cpu() {
            weights = weights.keeping_half_matrices(&files.weights)?;
        }
        let model = DecoderModel::from_weights(&weights, config).with_context(|| {
            format!("weights in {} do not match its config.json", dir.display())
        })?;
        Ok(Self {
            model,
            tokenizer,
            eos_token_ids,
            source: ModelSource::Directory(files),
            chat,
            identity,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.model.config
    }

    /// Token ids of `text` as the tokenizer's own settings give them (HF `tokenizer(text)`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        encode(&self.tokenizer, text)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        decode(&self.tokenizer, ids)
    }

    /// Dense generation from a text prompt.
    pub fn generate_text(
        &self,
        prompt: &str,
        max_tokens: usize,
        sampling: SamplingParams,
    ) -> Result<(Generation, String)> {
        let ids = self.encode(prompt)?;
        let params = GenerationParams {
            max_tokens,
            sampling,
            stop_tokens: self.eos_token_ids.clone(),
        };
        let g = generate::generate_dense(&self.model, &ids, &params, |_| Ok(()))?;
        let text = self.decode(&g.tokens)?;
        Ok((g, text))
    }
}

/// Token ids of `text` with the tokenizer's own settings (special tokens such as BOS added).
/// For code that holds a tokenizer but not the engine (the mistral.rs front).
pub fn encode(tokenizer: &tokenizers::Tokenizer, text: &str) -> Result<Vec<u32>> {
    if text.is_empty() {
        bail!("the prompt is empty");
    }
    let enc = tokenizer
        .encode(text, true)
        .map_err(|e| anyhow!("cannot tokenize prompt: {e}"))?;
    Ok(enc.get_ids().to_vec())
}

/// Text of `ids`, special tokens left out.
pub fn decode(tokenizer: &tokenizers::Tokenizer, ids: &[u32]) -> Result<String> {
    tokenizer
        .decode(ids, true)
        .map_err(|e| anyhow!("cannot decode tokens: {e}"))
}
