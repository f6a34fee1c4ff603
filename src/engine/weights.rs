//! Where the decoder's weights come from, whatever the file: one interface, Hugging Face names.
//!
//! A family is written once against [`WeightSource`]; safetensors directories and GGUF files
//! (dense or quantized) each implement it. Matrices come back as a [`Matrix`]: a dense tensor
//! or a quantized block matrix, which the linear layers multiply without dequantizing.

use super::quant::QMatrix;
use anyhow::{bail, Context, Result};
use candle_core::quantized::GgmlDType;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::sync::Arc;

/// A weight matrix `[rows, cols]` (output × input features).
#[derive(Clone)]
pub enum Matrix {
    Dense(Tensor),
    Quantized(Arc<QMatrix>),
    /// Row blocks of different quantized types, multiplied one by one (llama-quantize gives
    /// `attn_v` another type than `attn_q`, so a fused q|k|v cannot be one block matrix).
    Stacked(Vec<Matrix>),
}

impl Matrix {
    pub fn rows(&self) -> Result<usize> {
        Ok(match self {
            Self::Dense(t) => t.dim(0)?,
            Self::Quantized(q) => q.rows(),
            Self::Stacked(parts) => parts.iter().map(Matrix::rows).sum::<Result<usize>>()?,
        })
    }

    /// Rows stacked in order (fusing q|k|v or gate|up into one product).
    pub fn concat_rows(parts: &[&Matrix]) -> Result<Matrix> {
        if let Some(dense) = parts
            .iter()
            .map(|p| match p {
                Self::Dense(t) => Some(t),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
        {
            return Ok(Self::Dense(Tensor::cat(&dense, 0)?));
        }
        let quantized = parts
            .iter()
            .map(|p| match p {
                Self::Quantized(q) => Some(q.as_ref()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>();
        match quantized {
            Some(q) if q.iter().all(|m| m.dtype() == q[0].dtype()) => {
                Ok(Self::Quantized(Arc::new(QMatrix::concat_rows(&q)?)))
            }
            _ => Ok(Self::Stacked(parts.iter().map(|&p| p.clone()).collect())),
        }
    }

    /// Rows `rows` (in that order) as a new matrix: a label-restricted LM head.
    pub fn select_rows(&self, rows: &[u32]) -> Result<Matrix> {
        Ok(match self {
            Self::Dense(w) => Self::Dense(w.index_select(&Tensor::new(rows, w.device())?, 0)?),
            Self::Quantized(q) => {
                let rows: Vec<usize> = rows.iter().map(|&r| r as usize).collect();
                Self::Quantized(Arc::new(q.select_rows(&rows)?))
            }
            Self::Stacked(_) => bail!("cannot select rows of a stacked matrix"),
        })
    }

    /// Rows `start..start + len`: a view of a dense matrix, a copy of a quantized one.
    pub fn narrow_rows(&self, start: usize, len: usize) -> Result<Matrix> {
        Ok(match self {
            Self::Dense(t) => Self::Dense(t.narrow(0, start, len)?),
            Self::Quantized(q) => {
                let order: Vec<usize> = (start..start + len).collect();
                Self::Quantized(Arc::new(q.select_rows(&order)?))
            }
            Self::Stacked(parts) => {
                // Only whole parts (the k|v of a q|k|v), which is all the decoder asks for.
                let mut at = 0;
                let mut kept = Vec::new();
                for p in parts {
                    let rows = p.rows()?;
                    if at >= start && at + rows <= start + len {
                        kept.push(p.clone());
                    } else if at < start + len && at + rows > start {
                        bail!("rows {start}..{} cut a stacked part", start + len);
                    }
                    at += rows;
                }
                Self::Stacked(kept)
            }
        })
    }
}

/// The weights of one model under HF names (`model.layers.3.self_attn.q_proj.weight`).
pub trait WeightSource {
    /// A dense tensor (norms, biases) of `shape`, in the model's dtype.
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor>;
    /// A matrix `[rows, cols]`, quantized where the file is and the options allow.
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix>;
    fn contains(&self, name: &str) -> bool;
    /// Weights converted by llama.cpp: renamed (served here under HF names anyway) and with
    /// Gemma's norm weights stored as `1 + w`.
    fn llama_cpp_layout(&self) -> bool {
        false
    }
    /// The dtype of dense activations and tensors.
    fn dtype(&self) -> DType;
    fn device(&self) -> &Device;
}

/// Safetensors (one file or shards) through candle's `VarBuilder`.
pub struct SafetensorsWeights<'a> {
    vb: VarBuilder<'a>,
    /// Where given, bf16 / f16 matrices stay in the file's type (block matrices of one-value
    /// blocks, multiplied with f32 activations), instead of being widened to the model dtype:
    /// half the memory, and no f32 copy of a 262k-row Gemma embedding.
    half_matrices: Option<MmapedSafetensors>,
}

impl<'a> SafetensorsWeights<'a> {
    pub fn new(vb: VarBuilder<'a>) -> Self {
        Self {
            vb,
            half_matrices: None,
        }
    }

    /// Keep the bf16 / f16 matrices of `files` (the same files `vb` reads) in their type.
    pub fn keeping_half_matrices(mut self, files: &[std::path::PathBuf]) -> Result<Self> {
        // SAFETY: read-only mapping, as `VarBuilder::from_mmaped_safetensors` does.
        self.half_matrices = Some(unsafe { MmapedSafetensors::multi(files)? });
        Ok(self)
    }

    fn half_matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Option<Matrix>> {
        let Some(files) = &self.half_matrices else {
            return Ok(None);
        };
        let view = files.get(name).with_context(|| format!("weight {name}"))?;
        let dtype = match DType::try_from(view.dtype()) {
            Ok(DType::BF16) => GgmlDType::BF16,
            Ok(DType::F16) => GgmlDType::F16,
            _ => return Ok(None),
        };
        if view.shape() != [rows, cols] {
            bail!(
                "weight {name} has shape {:?}, expected [{rows}, {cols}]",
                view.shape()
            );
        }
        let matrix = QMatrix::new(dtype, rows, cols, view.data().to_vec())
            .with_context(|| format!("weight {name}"))?;
        Ok(Some(Matrix::Quantized(Arc::new(matrix))))
    }
}

impl WeightSource for SafetensorsWeights<'_> {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.vb
            .get(shape, name)
            .with_context(|| format!("weight {name}"))
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        match self.half_matrix(name, rows, cols)? {
            Some(m) => Ok(m),
            None => Ok(Matrix::Dense(self.tensor(name, &[rows, cols])?)),
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.vb.contains_tensor(name)
    }

    fn dtype(&self) -> DType {
        self.vb.dtype()
    }

    fn device(&self) -> &Device {
        self.vb.device()
    }
}
