//! The two ways families wire a decoder block from a norm, an attention and an MLP.
//!
//! * [`SequentialBlock`]: attention then MLP, each on a normed copy of the stream and added
//!   back (Llama, OPT); Gemma 3 also norms each branch's output ("sandwich" norms).
//! * [`ParallelBlock`]: attention and MLP both read one normed stream, and both are added
//!   (GPT-J).

use super::attention::Attention;
use super::mlp::Mlp;
use super::norm::Norm;
use anyhow::Result;
use candle_core::Tensor;

/// One block's result, kept apart so hooks can read each branch:
/// `hidden = input + attn_out + mlp_out`.
pub(crate) struct BlockOutput {
    pub(crate) attn_out: Tensor,
    pub(crate) mlp_out: Tensor,
    pub(crate) hidden: Tensor,
}

/// A decoder block as the engine runs it. The engine owns the attention's inputs beyond the
/// stream (positions, masks, the KV cache), so a block is handed `attend`, which runs
/// [`Block::attention`] on the block's attention input: for one sequence, or row by row for a
/// batch of sequences.
pub(crate) trait Block: Send + Sync {
    fn attention(&self) -> &Attention;

    /// What the attention reads from the residual stream `x` (its normed copy), for filling
    /// K/V of a block that did not run.
    fn attention_input(&self, x: &Tensor) -> Result<Tensor>;

    fn forward(
        &self,
        x: &Tensor,
        attend: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<BlockOutput>;
}

pub(crate) struct SequentialBlock {
    pub(crate) attention_norm: Norm,
    pub(crate) attention: Attention,
    /// Gemma 3's norm of the attention output.
    pub(crate) attention_out_norm: Option<Norm>,
    pub(crate) mlp_norm: Norm,
    pub(crate) mlp: Mlp,
    /// Gemma 3's norm of the MLP output.
    pub(crate) mlp_out_norm: Option<Norm>,
}

fn maybe_norm(norm: &Option<Norm>, x: Tensor) -> Result<Tensor> {
    Ok(match norm {
        Some(n) => n.forward(&x)?,
        None => x,
    })
}

impl Block for SequentialBlock {
    fn attention(&self) -> &Attention {
        &self.attention
    }

    fn attention_input(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.attention_norm.forward(x)?)
    }

    fn forward(
        &self,
        x: &Tensor,
        attend: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<BlockOutput> {
        let attn_out = maybe_norm(&self.attention_out_norm, attend(&self.attention_input(x)?)?)?;
        let mid = (x + &attn_out)?;
        let mlp_out = self.mlp.forward(&self.mlp_norm.forward(&mid)?)?;
        let mlp_out = maybe_norm(&self.mlp_out_norm, mlp_out)?;
        let hidden = (mid + &mlp_out)?;
        Ok(BlockOutput {
            attn_out,
            mlp_out,
            hidden,
        })
    }
}

pub(crate) struct ParallelBlock {
    pub(crate) norm: Norm,
    pub(crate) attention: Attention,
    pub(crate) mlp: Mlp,
}

impl Block for ParallelBlock {
    fn attention(&self) -> &Attention {
        &self.attention
    }

    fn attention_input(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.norm.forward(x)?)
    }

    fn forward(
        &self,
        x: &Tensor,
        attend: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<BlockOutput> {
        let normed = self.norm.forward(x)?;
        let attn_out = attend(&normed)?;
        let mlp_out = self.mlp.forward(&normed)?;
        // HF adds in this order: attn + mlp + residual.
        let hidden = ((&attn_out + &mlp_out)? + x)?;
        Ok(BlockOutput {
            attn_out,
            mlp_out,
            hidden,
        })
    }
}
