//! The norms blocks and heads apply: RMSNorm (Llama, Gemma) and LayerNorm with bias (OPT, GPT-J).

use crate::engine::weights::WeightSource;
use anyhow::Result;
use candle_core::Tensor;

#[derive(Clone)]
pub(crate) enum Norm {
    Rms {
        weight: Tensor,
        eps: f32,
    },
    Layer {
        weight: Tensor,
        bias: Tensor,
        eps: f32,
    },
}

impl Norm {
    /// RMSNorm with weight `{name}.weight`.
    pub(crate) fn rms(
        weights: &dyn WeightSource,
        name: &str,
        dim: usize,
        eps: f64,
    ) -> Result<Self> {
        Ok(Self::Rms {
            weight: weights.tensor(&format!("{name}.weight"), &[dim])?,
            eps: eps as f32,
        })
    }

    /// Gemma's RMSNorm, which scales by `1 + w`. HF checkpoints store `w`; llama.cpp's converter
    /// stores `1 + w` already, so the one is added only for HF files.
    pub(crate) fn rms_one_plus(
        weights: &dyn WeightSource,
        name: &str,
        dim: usize,
        eps: f64,
    ) -> Result<Self> {
        let weight = weights.tensor(&format!("{name}.weight"), &[dim])?;
        let weight = if weights.llama_cpp_layout() {
            weight
        } else {
            (weight + 1.0)?
        };
        Ok(Self::Rms {
            weight,
            eps: eps as f32,
        })
    }

    /// LayerNorm with `{name}.weight` and `{name}.bias`.
    pub(crate) fn layer(
        weights: &dyn WeightSource,
        name: &str,
        dim: usize,
        eps: f64,
    ) -> Result<Self> {
        Ok(Self::Layer {
            weight: weights.tensor(&format!("{name}.weight"), &[dim])?,
            bias: weights.tensor(&format!("{name}.bias"), &[dim])?,
            eps: eps as f32,
        })
    }

    /// Normalise over the last dimension.
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Rms { weight, eps } => candle_nn::ops::rms_norm(x, weight, *eps),
            Self::Layer { weight, bias, eps } => candle_nn::ops::layer_norm(x, weight, bias, *eps),
        }
    }
}
