//! Linear layers and the matrix products under them: weights stored `[out, in]` as in HF
//! checkpoints, multiplied in place (no copy per call), few-row products through
//! [`rows_matmul`], bf16 on the CPU multiplied in f32, quantized matrices through their block
//! kernels ([`QMatrix::matmul_t`]).

use crate::engine::quant::QMatrix;
use crate::engine::rows_matmul;
use crate::engine::weights::{Matrix, WeightSource};
use anyhow::Result;
use candle_core::{DType, Tensor};

/// `a @ b` (batched, broadcasting). candle's CPU backend has no bf16 matmul, so bf16 operands
/// on CPU are multiplied in f32 and the product rounded back: weights stay bf16 in memory.
pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    if a.dtype() == DType::BF16 && a.device().is_cpu() {
        let product = a
            .to_dtype(DType::F32)?
            .broadcast_matmul(&b.to_dtype(DType::F32)?)?;
        return product.to_dtype(DType::BF16);
    }
    a.broadcast_matmul(b)
}

/// `x @ weightᵀ` over the last dimension of `x` (any rank), for weights stored `[out, in]` as in
/// HF checkpoints. The rows of `x` are flattened into one matrix so the weight is read in place:
/// candle's `broadcast_matmul` would first copy the broadcast weight, on every call.
pub(crate) fn matmul_t(x: &Tensor, weight: &Tensor) -> candle_core::Result<Tensor> {
    let dims = x.dims();
    let inner = dims[dims.len() - 1];
    let rows = x.elem_count() / inner.max(1);
    let x = x.reshape((rows, inner))?;
    let y = match few_rows_matmul_t(&x, weight)? {
        Some(y) => y,
        None => matmul(&x, &weight.t()?)?,
    };
    let mut out = dims[..dims.len() - 1].to_vec();
    out.push(weight.dim(0)?);
    y.reshape(out)
}

/// [`rows_matmul`] for a few f32 rows on the CPU with a contiguous weight; `None` otherwise.
fn few_rows_matmul_t(x: &Tensor, weight: &Tensor) -> candle_core::Result<Option<Tensor>> {
    let (m, k) = x.dims2()?;
    let n = weight.dim(0)?;
    let f32_cpu = |t: &Tensor| t.dtype() == DType::F32 && t.device().is_cpu();
    if !rows_matmul::worthwhile(m, n, k) || !f32_cpu(x) || !f32_cpu(weight) {
        return Ok(None);
    }
    let (storage, layout) = weight.storage_and_layout();
    let (candle_core::Storage::Cpu(cpu), Some((start, end))) =
        (&*storage, layout.contiguous_offsets())
    else {
        return Ok(None);
    };
    let w = &cpu.as_slice::<f32>()?[start..end];
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let y = rows_matmul::matmul_t(&xs, m, w, n, k);
    Ok(Some(Tensor::from_vec(y, (m, n), x.device())?))
}

/// `x @ Wᵀ` for a quantized `W`: the rows of `x` (any rank, f32) go through the block kernels.
fn quantized_matmul_t(x: &Tensor, weight: &QMatrix) -> candle_core::Result<Tensor> {
    let dims = x.dims();
    let inner = dims[dims.len() - 1];
    let rows = x.elem_count() / inner.max(1);
    let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let y = weight.matmul_t(&xs, rows);
    let mut out = dims[..dims.len() - 1].to_vec();
    out.push(weight.rows());
    Tensor::from_vec(y, out, x.device())?.to_dtype(x.dtype())
}

/// `x @ weightᵀ` for either kind of matrix.
pub(crate) fn matrix_matmul_t(x: &Tensor, weight: &Matrix) -> candle_core::Result<Tensor> {
    match weight {
        Matrix::Dense(w) => matmul_t(x, w),
        Matrix::Quantized(q) => quantized_matmul_t(x, q),
        Matrix::Stacked(parts) => {
            let outs = parts
                .iter()
                .map(|p| matrix_matmul_t(x, p))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::cat(&outs, x.rank() - 1)
        }
    }
}

/// `x @ weightᵀ + bias`.
pub(crate) struct Linear {
    weight: Matrix,
    bias: Option<Tensor>,
}

impl Linear {
    pub(crate) fn new(weight: Matrix, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    pub(crate) fn weight(&self) -> &Matrix {
        &self.weight
    }

    pub(crate) fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = matrix_matmul_t(x, &self.weight)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    /// Output rows `start..start + len` of this layer (the k|v part of a fused q|k|v).
    pub(crate) fn narrow_rows(&self, start: usize, len: usize) -> Result<Linear> {
        Ok(Linear::new(
            self.weight.narrow_rows(start, len)?,
            self.bias
                .as_ref()
                .map(|b| b.narrow(0, start, len))
                .transpose()?,
        ))
    }
}

/// The linear layer `{prefix}.{name}` (weight `[out_dim, in_dim]`, optional bias).
pub(crate) fn linear(
    weights: &dyn WeightSource,
    prefix: &str,
    name: &str,
    in_dim: usize,
    out_dim: usize,
    bias: bool,
) -> Result<Linear> {
    let w = weights.matrix(&format!("{prefix}.{name}.weight"), out_dim, in_dim)?;
    let b = if bias {
        Some(weights.tensor(&format!("{prefix}.{name}.bias"), &[out_dim])?)
    } else {
        None
    };
    Ok(Linear::new(w, b))
}

/// One linear layer computing several stacked along the output dimension.
pub(crate) fn stack_linear(parts: &[Linear]) -> Result<Linear> {
    let weights: Vec<&Matrix> = parts.iter().map(|p| p.weight()).collect();
    let weight = Matrix::concat_rows(&weights)?;
    let bias = match parts.iter().map(|p| p.bias()).collect::<Option<Vec<_>>>() {
        Some(biases) => Some(Tensor::cat(&biases, 0)?),
        None => None,
    };
    Ok(Linear::new(weight, bias))
}
