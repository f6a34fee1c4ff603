//! Rotary position embeddings: HF's `rotate_half` form (Llama, Gemma) or GPT-J's interleaved
//! pairs, over the whole head or its first `dim` features, with Llama-3 and linear scaling.
//!
//! Frequencies are computed in f32 the way transformers computes them, so positions far into the
//! context round the same way as the reference.

use super::config::{RopeConfig, RopeScaling};
use candle_core::{DType, Device, Result, Tensor};
use std::sync::RwLock;

pub struct Rope {
    inv_freq: Vec<f32>,
    /// Features rotated at the start of each head; the rest pass through (GPT-J's `rotary_dim`).
    dim: usize,
    interleaved: bool,
    max_positions: usize,
    dtype: DType,
    device: Device,
    /// cos / sin for positions `0..len`, grown (doubling) as positions are used: a long
    /// context window costs nothing until it is filled, and a config claiming 2^40 positions
    /// cannot make the loader allocate terabytes.
    tables: RwLock<Tables>,
}

struct Tables {
    len: usize,
    cos: Tensor,
    sin: Tensor,
}

/// Positions tabled up front; covers most prompts without a regrow.
const INITIAL_POSITIONS: usize = 1024;

impl Rope {
    pub fn new(
        config: &RopeConfig,
        max_positions: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let inv_freq = inverse_frequencies(config);
        let first = build(
            &inv_freq,
            INITIAL_POSITIONS.min(max_positions),
            dtype,
            device,
        )?;
        Ok(Self {
            inv_freq,
            dim: config.dim,
            interleaved: config.interleaved,
            max_positions,
            dtype,
            device: device.clone(),
            tables: RwLock::new(first),
        })
    }

    /// cos / sin rows `offset..offset + seq`, growing the tables if needed.
    fn rows(&self, offset: usize, seq: usize) -> Result<(Tensor, Tensor)> {
        let end = offset + seq;
        if end > self.max_positions {
            candle_core::bail!(
                "position {end} is past the model's {} positions",
                self.max_positions
            );
        }
        {
            let t = self.tables.read().expect("rope tables poisoned");
            if end <= t.len {
                return Ok((t.cos.narrow(0, offset, seq)?, t.sin.narrow(0, offset, seq)?));
            }
        }
        let mut t = self.tables.write().expect("rope tables poisoned");
        if end > t.len {
            let len = end.next_power_of_two().min(self.max_positions);
            *t = build(&self.inv_freq, len, self.dtype, &self.device)?;
        }
        Ok((t.cos.narrow(0, offset, seq)?, t.sin.narrow(0, offset, seq)?))
    }

    /// Rotate `x` laid out as `[batch, seq, heads, head_dim]`, whose first token sits at `offset`.
    pub fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let (cos, sin) = self.rows(offset, x.dim(1)?)?;
        let head_dim = x.dim(3)?;
        let rotated = if self.dim < head_dim {
            x.narrow(3, 0, self.dim)?
        } else {
            x.clone()
        };
        let rotated = if self.interleaved {
            // candle's interleaved kernel wants [batch, heads, seq, dim].
            let bhsd = rotated.transpose(1, 2)?.contiguous()?;
            candle_nn::rotary_emb::rope_i(&bhsd, &cos, &sin)?.transpose(1, 2)?
        } else {
            candle_nn::rotary_emb::rope_thd(&rotated.contiguous()?, &cos, &sin)?
        };
        if self.dim < head_dim {
            let rest = x.narrow(3, self.dim, head_dim - self.dim)?;
            Tensor::cat(&[&rotated, &rest], 3)
        } else {
            Ok(rotated)
        }
    }
}

/// Tables for positions `0..positions`, computed in f32 as transformers does.
fn build(inv_freq: &[f32], positions: usize, dtype: DType, device: &Device) -> Result<Tables> {
    let half = inv_freq.len();
    let mut angles = Vec::with_capacity(positions * half);
    for p in 0..positions {
        angles.extend(inv_freq.iter().map(|f| p as f32 * f));
    }
    let angles = Tensor::from_vec(angles, (positions, half), device)?;
    Ok(Tables {
        len: positions,
        cos: angles.cos()?.to_dtype(dtype)?,
        sin: angles.sin()?.to_dtype(dtype)?,
    })
}

fn inverse_frequencies(config: &RopeConfig) -> Vec<f32> {
    let dim = config.dim;
    let theta = config.theta as f32;
    let base: Vec<f32> = (0..dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / dim as f32))
        .collect();
    match config.scaling {
        RopeScaling::None => base,
        RopeScaling::Linear { factor } => base.iter().map(|f| f / factor as f32).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: original,
        } => {
            let (factor, low, high, original) = (
                factor as f32,
                low_freq_factor as f32,
                high_freq_factor as f32,
                original as f32,
            );
            let low_freq_wavelen = original / low;
            let high_freq_wavelen = original / high;
            base.iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen < high_freq_wavelen {
                        f
                    } else if wavelen > low_freq_wavelen {
                        f / factor
                    } else {
                        let smooth = (original / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(scaling: RopeScaling) -> RopeConfig {
        RopeConfig {
            theta: 10000.0,
            scaling,
            dim: 16,
            interleaved: false,
        }
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let plain = inverse_frequencies(&config(RopeScaling::None));
        let scaled = inverse_frequencies(&config(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64.0,
        }));
        assert_eq!(plain[0], scaled[0], "highest frequency is untouched");
        let last = plain.len() - 1;
        assert!(
            (scaled[last] - plain[last] / 8.0).abs() < 1e-12,
            "lowest frequency divided by factor"
        );
    }

    #[test]
    fn tables_grow_with_the_positions_used() {
        let c = config(RopeScaling::None);
        let rope = Rope::new(&c, 1 << 40, DType::F32, &Device::Cpu).unwrap(); // must not be allocated
        let x = Tensor::ones((1, 1, 1, 16), DType::F32, &Device::Cpu).unwrap();
        let far = rope.apply(&x, 5000).unwrap();
        let near = Rope::new(&c, 6000, DType::F32, &Device::Cpu)
            .unwrap()
            .apply(&x, 5000);
        // The same position from a grown table and from a fresh one.
        let (a, b) = (
            far.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            near.unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
        );
        assert_eq!(a, b);
        assert!(rope.tables.read().unwrap().len >= 5001);
        let small = Rope::new(&c, 8, DType::F32, &Device::Cpu).unwrap();
        assert!(small.apply(&x, 8).is_err());
    }

    #[test]
    fn position_zero_is_identity() {
        let c = config(RopeScaling::None);
        let rope = Rope::new(&c, 64, DType::F32, &Device::Cpu).unwrap();
        let x = Tensor::arange(0f32, 16.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 1, 16))
            .unwrap();
        let y = rope.apply(&x, 0).unwrap();
        assert_eq!(
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
}
