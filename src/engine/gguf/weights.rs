//! A GGUF file's tensors served under Hugging Face names, so the decoder is written once.
//!
//! llama.cpp's converter renames tensors (`blk.N.attn_q`, `token_embd`, …) and, for the `llama`
//! architecture, reorders the rows of Q and K so that its interleaved rotary form applies. The
//! decoder uses HF's half-split rotary form, so those rows are put back in HF order here.

use super::GgufFile;
use crate::engine::arch::Family;
use crate::engine::config::ModelConfig;
use crate::engine::quant::QMatrix;
use crate::engine::weights::{Matrix, WeightSource};
use anyhow::{bail, Context, Result};
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use std::sync::Arc;

pub struct GgufWeights<'a> {
    file: &'a GgufFile,
    family: &'static dyn Family,
    /// `Some`: every matrix is dequantized to this dtype (the dense path); `None`: matrices
    /// stay in their GGUF types.
    dense: Option<DType>,
    device: Device,
    /// Q and K rows are in llama.cpp's rotary order (the `llama` architecture).
    permuted_qk: bool,
    num_heads: usize,
    num_kv_heads: usize,
}

impl<'a> GgufWeights<'a> {
    /// The weights of `file`, whose metadata `config` was read from.
    pub fn new(
        file: &'a GgufFile,
        config: &ModelConfig,
        dense: Option<DType>,
        device: &Device,
    ) -> Result<Self> {
        let arch = file.string("general.architecture")?.unwrap_or_default();
        Ok(Self {
            file,
            family: config.family,
            dense,
            device: device.clone(),
            permuted_qk: config.family.gguf_permutes_qk(arch),
            num_heads: config.num_attention_heads,
            num_kv_heads: config.num_key_value_heads,
        })
    }

    fn gguf_name(&self, hf: &str) -> Option<String> {
        self.family.gguf_tensor_name(hf)
    }

    /// The tensor's rows (`rows` × `cols` values), checked against the file, in HF row order.
    fn load(&self, hf: &str, rows: usize, cols: usize) -> Result<QMatrix> {
        let name = self
            .gguf_name(hf)
            .with_context(|| format!("no GGUF name for weight {hf}"))?;
        let (info, bytes) = self.file.tensor_bytes(&name)?;
        let dims = info.shape.dims();
        let (got_rows, got_cols) = match dims {
            [c] => (1, *c),
            [r, c] => (*r, *c),
            _ => bail!(
                "{}: tensor `{name}` has shape {dims:?}, expected a matrix",
                self.file.path.display()
            ),
        };
        if got_rows * got_cols != rows * cols || got_cols != cols {
            bail!(
                "{}: tensor `{name}` has shape {dims:?}, but the metadata implies [{rows}, {cols}]",
                self.file.path.display()
            );
        }
        let matrix = QMatrix::new(info.ggml_dtype, rows, cols, bytes)
            .with_context(|| format!("{}: tensor `{name}`", self.file.path.display()))?;
        match self.rotary_heads(hf) {
            Some(heads) => matrix.select_rows(&hf_row_order(rows, heads)?),
            None => Ok(matrix),
        }
    }

    /// Heads whose rows llama.cpp reordered, for a Q or K weight (or bias) of a `llama` file.
    fn rotary_heads(&self, hf: &str) -> Option<usize> {
        if !self.permuted_qk {
            return None;
        }
        if hf.contains(".q_proj.") {
            Some(self.num_heads)
        } else if hf.contains(".k_proj.") {
            Some(self.num_kv_heads)
        } else {
            None
        }
    }

    fn to_dense(&self, m: &QMatrix, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Ok(Tensor::from_vec(m.dequantize(), shape, &self.device)?.to_dtype(dtype)?)
    }
}

/// For each HF row of a `[heads * head_dim, …]` Q/K weight, the row llama.cpp stored it in:
/// within a head, HF keeps the two rotary halves apart (`t * half + j`), llama.cpp interleaves
/// them (`2 * j + t`).
fn hf_row_order(rows: usize, heads: usize) -> Result<Vec<usize>> {
    if heads == 0 || rows % heads != 0 || (rows / heads) % 2 != 0 {
        bail!("cannot undo llama.cpp's rotary row order: {rows} rows over {heads} heads");
    }
    let head_dim = rows / heads;
    let half = head_dim / 2;
    Ok((0..rows)
        .map(|r| {
            let (h, within) = (r / head_dim, r % head_dim);
            let (t, j) = (within / half, within % half);
            h * head_dim + 2 * j + t
        })
        .collect())
}

impl WeightSource for GgufWeights<'_> {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let elems: usize = shape.iter().product();
        let cols = *shape.last().unwrap_or(&1);
        let m = self.load(name, elems / cols.max(1), cols)?;
        self.to_dense(&m, shape, self.dtype())
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        let m = self.load(name, rows, cols)?;
        Ok(match self.dense {
            Some(dtype) => Matrix::Dense(self.to_dense(&m, &[rows, cols], dtype)?),
            // f32 weights are fastest on the dense path (few-row kernel, gemm).
            None if m.dtype() == GgmlDType::F32 => {
                Matrix::Dense(self.to_dense(&m, &[rows, cols], DType::F32)?)
            }
            None => Matrix::Quantized(Arc::new(m)),
        })
    }

    fn contains(&self, name: &str) -> bool {
        self.gguf_name(name)
            .is_some_and(|g| self.file.tensor_info(&g).is_some())
    }

    fn llama_cpp_layout(&self) -> bool {
        true
    }

    fn dtype(&self) -> DType {
        self.dense.unwrap_or(DType::F32)
    }

    fn device(&self) -> &Device {
        &self.device
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_order_undoes_the_converters_permutation() {
        // convert_hf_to_gguf: w.reshape(heads, 2, half, ..).swapaxes(1, 2): stored row (h, j, t)
        // holds HF row (h, t, j).
        let (heads, head_dim) = (3, 8);
        let half = head_dim / 2;
        let mut stored = vec![0; heads * head_dim];
        for h in 0..heads {
            for j in 0..half {
                for t in 0..2 {
                    stored[h * head_dim + 2 * j + t] = h * head_dim + t * half + j;
                }
            }
        }
        let order = hf_row_order(heads * head_dim, heads).unwrap();
        let restored: Vec<usize> = order.iter().map(|&g| stored[g]).collect();
        assert_eq!(restored, (0..heads * head_dim).collect::<Vec<_>>());
        assert!(hf_row_order(10, 3).is_err());
    }
}
