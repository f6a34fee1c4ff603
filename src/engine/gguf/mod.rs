//! GGUF files (llama.cpp's format: metadata, tokenizer and quantized tensors in one file).
//!
//! `header` parses the header with every length bounded by the file; [`GgufFile`] answers typed
//! metadata questions with errors that name the key, and reads tensors' bytes; `config` turns
//! the metadata into a [`ModelConfig`](super::ModelConfig); `weights` serves the decoder's
//! weights under their Hugging Face names; `tokenizer` builds the tokenizer; `writer` writes HF
//! directories as GGUF files (llama.cpp's layout) for tests and conversions.

pub mod config;
pub mod header;
pub mod names;
pub mod tokenizer;
pub mod weights;
pub mod writer;

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// An open GGUF file whose header has been read and checked against its size.
pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
    file: File,
    pub file_len: u64,
}

/// Whether `path` names a GGUF file (by its extension), as opposed to a model directory.
pub fn is_gguf_path(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_file() {
            bail!(
                "GGUF file {} does not exist or is not a file",
                path.display()
            );
        }
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let file_len = file.metadata()?.len();
        let content = header::read(&file, file_len)
            .with_context(|| format!("invalid GGUF file {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
            file,
            file_len,
        })
    }

    pub fn value(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    /// An unsigned integer of any width; `None` when absent.
    pub fn uint(&self, key: &str) -> Result<Option<u64>> {
        let Some(v) = self.value(key) else {
            return Ok(None);
        };
        let n = match v {
            Value::U8(x) => *x as u64,
            Value::U16(x) => *x as u64,
            Value::U32(x) => *x as u64,
            Value::U64(x) => *x,
            Value::I8(x) if *x >= 0 => *x as u64,
            Value::I16(x) if *x >= 0 => *x as u64,
            Value::I32(x) if *x >= 0 => *x as u64,
            Value::I64(x) if *x >= 0 => *x as u64,
            other => bail!(
                "{}: metadata `{key}` is {other:?}, not a non-negative integer",
                self.path.display()
            ),
        };
        Ok(Some(n))
    }

    /// A required unsigned integer that fits `usize`.
    pub fn required_usize(&self, key: &str) -> Result<usize> {
        self.uint(key)?
            .with_context(|| format!("{}: missing metadata `{key}`", self.path.display()))
            .and_then(|n| {
                usize::try_from(n).with_context(|| {
                    format!(
                        "{}: metadata `{key}` = {n} is too large",
                        self.path.display()
                    )
                })
            })
    }

    pub fn float(&self, key: &str) -> Result<Option<f64>> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(*x as f64)),
            Some(Value::F64(x)) => Ok(Some(*x)),
            Some(other) => bail!(
                "{}: metadata `{key}` is {other:?}, not a float",
                self.path.display()
            ),
        }
    }

    pub fn string(&self, key: &str) -> Result<Option<&str>> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => bail!(
                "{}: metadata `{key}` is a {:?}, not a string",
                self.path.display(),
                other.value_type()
            ),
        }
    }

    pub fn boolean(&self, key: &str) -> Result<Option<bool>> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => bail!(
                "{}: metadata `{key}` is {other:?}, not a bool",
                self.path.display()
            ),
        }
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.content.tensor_infos.get(name)
    }

    /// The raw bytes of tensor `name` (its extent was checked against the file when opening).
    pub fn tensor_bytes(&self, name: &str) -> Result<(&TensorInfo, Vec<u8>)> {
        let info = self
            .tensor_info(name)
            .with_context(|| format!("{}: no tensor `{name}`", self.path.display()))?;
        let dims = info.shape.dims();
        let len = header::tensor_bytes(
            info.ggml_dtype,
            dims[dims.len() - 1],
            info.shape.elem_count(),
        )?;
        let mut bytes = vec![0u8; len];
        self.file
            .read_exact_at(&mut bytes, self.content.tensor_data_offset + info.offset)
            .with_context(|| format!("{}: cannot read tensor `{name}`", self.path.display()))?;
        Ok((info, bytes))
    }
}
