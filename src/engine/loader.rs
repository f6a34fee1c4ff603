//! Finding and loading a local Hugging Face model directory: config, safetensors (single or
//! sharded), tokenizer, and the special tokens scattered over three JSON files; and what every
//! model has whatever its format (where it came from, its identity).

use super::config::{ModelConfig, OneOrMany};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Where a model was loaded from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// A Hugging Face directory (config.json, safetensors, tokenizer.json).
    Directory(ModelFiles),
    /// One GGUF file holding config, tokenizer and weights.
    Gguf(PathBuf),
}

impl ModelSource {
    /// The directory or file the user named.
    pub fn path(&self) -> &Path {
        match self {
            Self::Directory(files) => &files.dir,
            Self::Gguf(path) => path,
        }
    }

    /// Short name of the format, for reports.
    pub fn format(&self) -> &'static str {
        match self {
            Self::Directory(_) => "safetensors",
            Self::Gguf(_) => "gguf",
        }
    }
}

/// The files of a model directory, located and checked to exist.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub weights: Vec<PathBuf>,
    pub tokenizer: PathBuf,
    pub generation_config: Option<PathBuf>,
    pub tokenizer_config: Option<PathBuf>,
}

impl ModelFiles {
    pub fn locate(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            bail!(
                "model directory {} does not exist or is not a directory",
                dir.display()
            );
        }
        let required = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            if !p.is_file() {
                bail!("model directory {} has no {name}", dir.display());
            }
            Ok(p)
        };
        let optional = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
        let index = dir.join("model.safetensors.index.json");
        let weights = if index.is_file() {
            sharded_weight_files(&index)?
        } else if dir.join("model.safetensors").is_file() {
            vec![dir.join("model.safetensors")]
        } else {
            bail!(
                "model directory {} has neither model.safetensors nor model.safetensors.index.json",
                dir.display()
            );
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            config: required("config.json")?,
            weights,
            tokenizer: required("tokenizer.json")?,
            generation_config: optional("generation_config.json"),
            tokenizer_config: optional("tokenizer_config.json"),
        })
    }
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: std::collections::BTreeMap<String, String>,
}

fn sharded_weight_files(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index)
        .with_context(|| format!("cannot read {}", index.display()))?;
    let parsed: ShardIndex = serde_json::from_str(&text)
        .with_context(|| format!("invalid shard index {}", index.display()))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let names: BTreeSet<&String> = parsed.weight_map.values().collect();
    if names.is_empty() {
        bail!("shard index {} lists no weights", index.display());
    }
    names
        .into_iter()
        .map(|name| {
            let p = dir.join(name);
            if !p.is_file() {
                bail!("shard {name} listed in {} is missing", index.display());
            }
            Ok(p)
        })
        .collect()
}

/// The special-token ids that end generation, gathered from every file that may name them.
pub fn eos_token_ids(
    files: &ModelFiles,
    config: &ModelConfig,
    tokenizer: &tokenizers::Tokenizer,
) -> Result<Vec<u32>> {
    let mut ids: BTreeSet<u32> = config.eos_token_ids.iter().copied().collect();
    if let Some(path) = &files.generation_config {
        #[derive(Deserialize)]
        struct GenerationConfig {
            eos_token_id: Option<OneOrMany>,
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let g: GenerationConfig =
            serde_json::from_str(&text).with_context(|| format!("invalid {}", path.display()))?;
        ids.extend(OneOrMany::ids(g.eos_token_id));
    }
    if let Some(path) = &files.tokenizer_config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("invalid {}", path.display()))?;
        // `eos_token` is a string or an AddedToken object with a `content` field.
        let name = match v.get("eos_token") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(obj) => obj
                .get("content")
                .and_then(|c| c.as_str())
                .map(str::to_string),
            None => None,
        };
        if let Some(id) = name.and_then(|n| tokenizer.token_to_id(&n)) {
            ids.insert(id);
        }
    }
    Ok(ids.into_iter().collect())
}

/// Parse a dtype name as used in configs and on the command line; `auto` is `None` (f32 for
/// safetensors, the file's own types for GGUF).
pub fn parse_dtype(name: &str) -> Result<Option<DType>> {
    Ok(Some(match name {
        "auto" => return Ok(None),
        "f32" | "float32" => DType::F32,
        "bf16" | "bfloat16" => DType::BF16,
        "f16" | "float16" => DType::F16,
        other => bail!("unknown dtype {other:?} (expected auto, f32, bf16 or f16)"),
    }))
}

/// Parse a device name: `cpu`, `cuda`, `cuda:N` or `metal`.
pub fn parse_device(name: &str) -> Result<Device> {
    let device = match name {
        "cpu" => Device::Cpu,
        "cuda" => Device::new_cuda(0)?,
        "metal" => Device::new_metal(0)?,
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Device::new_cuda(n)?,
            _ => bail!("unknown device {other:?} (expected cpu, cuda, cuda:N or metal)"),
        },
    };
    Ok(device)
}

/// What a trained classifier must match to be used with a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelIdentity {
    pub architecture: String,
    pub num_layers: usize,
    pub hidden_size: usize,
    pub vocab_size: usize,
    /// FNV-1a over each model file's size, head and tail (cheap, and it changes when the
    /// weights do: safetensors and GGUF headers carry every tensor's offsets).
    pub weights_fingerprint: String,
}

impl ModelIdentity {
    /// The identity of a model: its `config.json` (none for GGUF, whose header is in the
    /// weights file) and weight files.
    pub fn of(
        config_file: Option<&Path>,
        weights: &[PathBuf],
        config: &ModelConfig,
    ) -> Result<Self> {
        let mut h = Fnv::default();
        if let Some(path) = config_file {
            h.write(&std::fs::read(path)?);
        }
        for path in weights {
            let mut f = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            let len = f.metadata()?.len();
            h.write(&len.to_le_bytes());
            let mut buf = vec![0u8; len.min(1 << 20) as usize];
            f.read_exact(&mut buf)?;
            h.write(&buf);
            f.seek(SeekFrom::Start(len - buf.len() as u64))?;
            f.read_exact(&mut buf)?;
            h.write(&buf);
        }
        Ok(Self {
            architecture: config.model_type.clone(),
            num_layers: config.num_hidden_layers,
            hidden_size: config.hidden_size,
            vocab_size: config.vocab_size,
            weights_fingerprint: format!("{:016x}", h.0),
        })
    }

    /// `Ok` when `self` (what a file was made for) matches `actual`; else names the field.
    pub fn check_matches(&self, actual: &ModelIdentity) -> Result<()> {
        let fields = [
            (
                "architecture",
                self.architecture.clone(),
                actual.architecture.clone(),
            ),
            (
                "num_layers",
                self.num_layers.to_string(),
                actual.num_layers.to_string(),
            ),
            (
                "hidden_size",
                self.hidden_size.to_string(),
                actual.hidden_size.to_string(),
            ),
            (
                "vocab_size",
                self.vocab_size.to_string(),
                actual.vocab_size.to_string(),
            ),
            (
                "weights_fingerprint",
                self.weights_fingerprint.clone(),
                actual.weights_fingerprint.clone(),
            ),
        ];
        for (name, want, got) in fields {
            if want != got {
                bail!("made for a model with {name} = {want}, but this model has {name} = {got}");
            }
        }
        Ok(())
    }
}

/// FNV-1a: a cheap, stable hash for fingerprints (model files, recorded prompts).
#[derive(Clone, Copy)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf29ce484222325)
    }
}

impl Fnv {
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x100000001b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_dir_and_files_are_named() {
        let e = ModelFiles::locate(Path::new("/nonexistent/model"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/model"), "{e}");
        let dir = std::env::temp_dir().join(format!("adainfer-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = ModelFiles::locate(&dir).unwrap_err().to_string();
        assert!(e.contains("model.safetensors"), "{e}");
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            r#"{"weight_map":{"a":"x.safetensors"}}"#,
        )
        .unwrap();
        let e = ModelFiles::locate(&dir).unwrap_err().to_string();
        assert!(e.contains("x.safetensors"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dtype_and_device_names() {
        assert_eq!(parse_dtype("bf16").unwrap(), Some(DType::BF16));
        assert_eq!(parse_dtype("auto").unwrap(), None);
        assert!(parse_dtype("int4")
            .unwrap_err()
            .to_string()
            .contains("int4"));
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("tpu").unwrap_err().to_string().contains("tpu"));
    }
}
