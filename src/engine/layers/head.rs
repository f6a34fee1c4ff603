//! Final norm + lm_head: the dense output and, on the last token only, the hooks' probe.

use super::linear::matrix_matmul_t;
use super::norm::Norm;
use crate::engine::weights::Matrix;
use crate::hook::ProbeSource;
use anyhow::{bail, Result};
use candle_core::{DType, IndexOp, Tensor};

pub struct LmHead {
    norm: Norm,
    weight: Matrix,
    /// GPT-J's head has one.
    bias: Option<Tensor>,
}

/// Every id in `ids` must index the vocabulary; `what` names them in the error.
pub fn check_vocabulary(what: &str, ids: &[u32], vocab: usize) -> Result<()> {
    match ids.iter().find(|&&id| id as usize >= vocab) {
        Some(bad) => bail!("{what} id {bad} is outside the vocabulary (size {vocab})"),
        None => Ok(()),
    }
}

impl LmHead {
    pub(crate) fn new(norm: Norm, weight: Matrix, bias: Option<Tensor>) -> Self {
        Self { norm, weight, bias }
    }

    /// The head over the first `n` tokens of the vocabulary only (a draft head; quantized
    /// weights are copied, dense ones viewed).
    pub fn first_rows(&self, n: usize) -> Result<LmHead> {
        let vocab = self.weight.rows()?;
        if n == 0 || n > vocab {
            bail!("a draft vocabulary of {n} tokens does not fit the model's {vocab}");
        }
        Ok(Self {
            norm: self.norm.clone(),
            weight: self.weight.narrow_rows(0, n)?,
            bias: self.bias.as_ref().map(|b| b.narrow(0, 0, n)).transpose()?,
        })
    }

    /// Logits of every row of `hidden` (`[.., hidden]`), as f32.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let normed = self.norm.forward(hidden)?;
        let logits = matrix_matmul_t(&normed, &self.weight)?;
        let logits = match &self.bias {
            Some(b) => logits.broadcast_add(b)?,
            None => logits,
        };
        Ok(logits.to_dtype(DType::F32)?)
    }
}

impl ProbeSource for LmHead {
    fn last_token_logits(&self, hidden: &Tensor, ids: Option<&[u32]>) -> Result<Vec<f32>> {
        let seq = hidden.dim(1)?;
        let last = hidden.i((.., seq - 1..seq, ..))?.squeeze(0)?;
        let normed = self.norm.forward(&last)?;
        let (weight, bias) = match ids {
            None => (self.weight.clone(), self.bias.clone()),
            Some(ids) => {
                check_vocabulary("probe token", ids, self.weight.rows()?)?;
                let bias = match &self.bias {
                    Some(b) => Some(b.index_select(&Tensor::new(ids, b.device())?, 0)?),
                    None => None,
                };
                (self.weight.select_rows(ids)?, bias)
            }
        };
        let logits = matrix_matmul_t(&normed, &weight)?;
        let logits = match bias {
            Some(b) => logits.broadcast_add(&b)?,
            None => logits,
        };
        Ok(logits.squeeze(0)?.to_dtype(DType::F32)?.to_vec1()?)
    }
}
