//! A [`ModelConfig`] from GGUF metadata: `general.architecture` picks the family (the table
//! in `arch`), which reads its `{arch}.*` keys; the keys every family shares are read here.

use super::GgufFile;
use crate::engine::arch;
use crate::engine::config::ModelConfig;
use anyhow::{Context, Result};

pub fn model_config(file: &GgufFile) -> Result<ModelConfig> {
    let path = file.path.display();
    let arch = file
        .string("general.architecture")?
        .with_context(|| format!("{path}: missing metadata `general.architecture`"))?;
    let family = arch::for_gguf_architecture(arch).with_context(|| format!("{path}"))?;
    family.gguf_config(file, arch)
}

/// `tokenizer.ggml.*` ids that begin and end text.
pub struct SpecialTokens {
    pub bos: Option<u32>,
    /// End of text, end of turn and end of message: each ends a generation.
    pub eos: Vec<u32>,
}

impl GgufFile {
    pub fn special_tokens(&self) -> Result<SpecialTokens> {
        let token = |k: &str| -> Result<Option<u32>> {
            Ok(self.uint(&format!("tokenizer.ggml.{k}"))?.map(|v| v as u32))
        };
        let mut eos: Vec<u32> = ["eos_token_id", "eot_token_id", "eom_token_id"]
            .iter()
            .filter_map(|k| token(k).transpose())
            .collect::<Result<_>>()?;
        eos.dedup();
        Ok(SpecialTokens {
            bos: token("bos_token_id")?,
            eos,
        })
    }

    /// `{arch}.vocab_size`, else the rows of `token_embd.weight`.
    pub fn vocab_size(&self, arch: &str) -> Result<usize> {
        if let Some(v) = self.uint(&format!("{arch}.vocab_size"))? {
            return Ok(v as usize);
        }
        let embedding = self
            .tensor_info("token_embd.weight")
            .with_context(|| format!("{}: no tensor `token_embd.weight`", self.path.display()))?;
        Ok(embedding.shape.dims()[0])
    }
}
