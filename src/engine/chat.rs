//! What a model says about chatting with it: its Jinja chat template and the text of its
//! bos / eos tokens (templates use them), from `tokenizer_config.json` or GGUF metadata.
//! Rendering is the server's business (`serve::template`); finding the text is the loader's.

use super::gguf::GgufFile;
use super::loader::ModelFiles;
use super::ModelConfig;
use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::Value as GgufValue;
use serde_json::Value;
use std::path::Path;

#[derive(Debug, Clone, Default)]
pub struct ChatInfo {
    /// The template source; `None` when the model has none.
    pub template: Option<String>,
    /// Where the template came from, for error messages.
    pub origin: String,
    pub bos_token: String,
    pub eos_token: String,
}

impl ChatInfo {
    /// From a model directory's `tokenizer_config.json`, if it has one.
    pub fn of_dir(files: &ModelFiles) -> Result<Self> {
        match &files.tokenizer_config {
            Some(path) => Self::from_tokenizer_config(path),
            None => Ok(Self::default()),
        }
    }

    pub fn from_tokenizer_config(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let config: Value =
            serde_json::from_str(&text).with_context(|| format!("invalid {}", path.display()))?;
        let origin = path.display().to_string();
        let template = template_in(config.get("chat_template").unwrap_or(&Value::Null))
            .with_context(|| format!("chat_template in {origin}"))?;
        Ok(Self {
            template,
            origin,
            bos_token: special_token(&config, "bos_token"),
            eos_token: special_token(&config, "eos_token"),
        })
    }

    /// From GGUF metadata: `tokenizer.chat_template`, and the bos / eos ids' token text.
    pub fn of_gguf(file: &GgufFile, config: &ModelConfig) -> Result<Self> {
        let token_text = |id: Option<u32>| -> String {
            let tokens = match file.value("tokenizer.ggml.tokens") {
                Some(GgufValue::Array(tokens)) => tokens,
                _ => return String::new(),
            };
            match id.and_then(|id| tokens.get(id as usize)) {
                Some(GgufValue::String(s)) => s.clone(),
                _ => String::new(),
            }
        };
        Ok(Self {
            template: file.string("tokenizer.chat_template")?.map(str::to_string),
            origin: format!("{} (tokenizer.chat_template)", file.path.display()),
            bos_token: token_text(config.bos_token_id),
            eos_token: token_text(config.eos_token_ids.first().copied()),
        })
    }
}

/// `chat_template` is a string, or a list of named templates of which `default` is used.
fn template_in(value: &Value) -> Result<Option<String>> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Array(list) => {
            let named = |name: &str| {
                list.iter().find_map(|t| {
                    (t.get("name")?.as_str()? == name).then(|| t.get("template")?.as_str())?
                })
            };
            match named("default") {
                Some(s) => Ok(Some(s.to_string())),
                None => bail!("a list of templates must hold one named \"default\""),
            }
        }
        other => bail!("expected a string or a list of named templates, got {other}"),
    }
}

/// `bos_token` / `eos_token` are a string or an `{"content": …}` object.
fn special_token(config: &Value, key: &str) -> String {
    let v = config.get(key);
    v.and_then(Value::as_str)
        .or_else(|| v?.get("content")?.as_str())
        .unwrap_or_default()
        .to_string()
}
