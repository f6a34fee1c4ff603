//! Token ids to the first residual stream: a table lookup, times a scale (Gemma's √hidden),
//! plus learned position rows (OPT).

use crate::engine::weights::Matrix;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};

pub(crate) struct Embedding {
    /// `[vocab, hidden]`; quantized in GGUF files (rows are dequantized as tokens are looked up).
    table: Matrix,
    scale: Option<f64>,
    positions: Option<LearnedPositions>,
    dtype: DType,
    device: Device,
}

/// OPT's position table: position `p` reads row `p + offset`.
pub(crate) struct LearnedPositions {
    pub(crate) table: Tensor,
    pub(crate) offset: usize,
}

impl Embedding {
    pub(crate) fn new(table: Matrix, dtype: DType, device: &Device) -> Self {
        Self {
            table,
            scale: None,
            positions: None,
            dtype,
            device: device.clone(),
        }
    }

    pub(crate) fn scaled(mut self, scale: f64) -> Self {
        self.scale = Some(scale);
        self
    }

    pub(crate) fn with_positions(mut self, positions: LearnedPositions) -> Self {
        self.positions = Some(positions);
        self
    }

    /// The table (the tied LM head reads it too).
    pub(crate) fn table(&self) -> &Matrix {
        &self.table
    }

    /// `[n, hidden]` for token `tokens[i]` at position `positions[i]`. Ids are checked by the
    /// caller.
    pub(crate) fn lookup(&self, tokens: &[u32], positions: &[usize]) -> Result<Tensor> {
        let rows = match &self.table {
            Matrix::Dense(table) => table.index_select(&Tensor::new(tokens, &self.device)?, 0)?,
            Matrix::Quantized(table) => {
                let width = table.cols();
                let mut values = vec![0f32; tokens.len() * width];
                for (row, &id) in values.chunks_mut(width).zip(tokens) {
                    table.dequantize_row(id as usize, row);
                }
                Tensor::from_vec(values, (tokens.len(), width), &self.device)?
                    .to_dtype(self.dtype)?
            }
            Matrix::Stacked(_) => bail!("the embedding table cannot be a stacked matrix"),
        };
        let rows = match self.scale {
            // HF rounds the scale to the weights' dtype before multiplying.
            Some(scale) => {
                rows.broadcast_mul(&Tensor::new(scale as f32, &self.device)?.to_dtype(self.dtype)?)?
            }
            None => rows,
        };
        Ok(match &self.positions {
            Some(p) => {
                let ids: Vec<u32> = positions.iter().map(|&i| (i + p.offset) as u32).collect();
                let available = p.table.dim(0)?;
                if let Some(&last) = ids.iter().max() {
                    if last as usize >= available {
                        bail!(
                            "position {} is past the model's {} learned positions",
                            last as usize - p.offset,
                            available - p.offset
                        );
                    }
                }
                (rows + p.table.index_select(&Tensor::new(ids, &self.device)?, 0)?)?
            }
            None => rows,
        })
    }
}
