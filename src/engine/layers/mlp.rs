//! The feed-forward branch: gated (`down(act(gate) · up)`, Llama and Gemma) or plain
//! (`fc2(act(fc1))`, OPT and GPT-J).

use super::linear::{stack_linear, Linear};
use crate::engine::config::Activation;
use anyhow::Result;
use candle_core::Tensor;

pub(crate) enum Mlp {
    Gated {
        /// gate and up projections stacked: one matmul, then split.
        gate_up_proj: Linear,
        down_proj: Linear,
        intermediate: usize,
        activation: Activation,
    },
    Plain {
        fc1: Linear,
        fc2: Linear,
        activation: Activation,
    },
}

fn activate(x: &Tensor, activation: Activation) -> candle_core::Result<Tensor> {
    match activation {
        Activation::Silu => candle_nn::ops::silu(x),
        Activation::GeluTanh => x.gelu(),
        Activation::Relu => x.relu(),
    }
}

impl Mlp {
    pub(crate) fn gated(
        gate: Linear,
        up: Linear,
        down: Linear,
        intermediate: usize,
        activation: Activation,
    ) -> Result<Self> {
        Ok(Self::Gated {
            gate_up_proj: stack_linear(&[gate, up])?,
            down_proj: down,
            intermediate,
            activation,
        })
    }

    pub(crate) fn plain(fc1: Linear, fc2: Linear, activation: Activation) -> Self {
        Self::Plain {
            fc1,
            fc2,
            activation,
        }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Gated {
                gate_up_proj,
                down_proj,
                intermediate,
                activation,
            } => {
                let gate_up = gate_up_proj.forward(x)?;
                let last = gate_up.rank() - 1;
                let gate = activate(&gate_up.narrow(last, 0, *intermediate)?, *activation)?;
                let up = gate_up.narrow(last, *intermediate, *intermediate)?;
                down_proj.forward(&(gate * up)?)?
            }
            Self::Plain {
                fc1,
                fc2,
                activation,
            } => fc2.forward(&activate(&fc1.forward(x)?, *activation)?)?,
        })
    }
}
