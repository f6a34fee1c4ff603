//! Activations quantized once per call to 8-bit blocks of 32 (ggml's Q8_1 idea, own layout).
//!
//! Every weight row is then dotted with integers, and each activation is quantized once instead
//! of once per weight row. Besides the scale we keep, per half block, `d · Σq`: the canonical
//! weight offsets (`min`, `-8`, `-32`, ...) multiply it instead of every element.

use super::formats::QB;

/// `m` rows of `cols` activations, as `nb = cols / 32` blocks per row.
pub struct QAct {
    pub m: usize,
    /// `[m, nb, 32]` quantized values in -127..=127.
    pub qs: Vec<i8>,
    /// `[m, nb]` block scales: `x ≈ d · q`.
    pub d: Vec<f32>,
    /// `[m, nb, 2]` `d · Σq` over each 16-value half.
    pub hs: Vec<f32>,
}

impl QAct {
    /// Quantizes `x` (`[m, cols]`, `cols % 32 == 0`). Written so that the compiler vectorises it;
    /// `#[inline(always)]` so that the SIMD levels instantiate it with their target features.
    #[inline(always)]
    pub fn quantize(x: &[f32], m: usize, cols: usize) -> QAct {
        debug_assert!(cols.is_multiple_of(QB) && x.len() == m * cols);
        let nb = cols / QB;
        let mut a = QAct {
            m,
            qs: vec![0; m * cols],
            d: vec![0.0; m * nb],
            hs: vec![0.0; m * nb * 2],
        };
        for (b, xs) in x.chunks_exact(QB).enumerate() {
            let amax = xs.iter().fold(0f32, |acc, v| acc.max(v.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            let q = &mut a.qs[b * QB..(b + 1) * QB];
            for (o, v) in q.iter_mut().zip(xs) {
                *o = (v * id).round_ties_even() as i8;
            }
            let s0: i32 = q[..16].iter().map(|&v| v as i32).sum();
            let s1: i32 = q[16..].iter().map(|&v| v as i32).sum();
            a.d[b] = d;
            a.hs[2 * b] = d * s0 as f32;
            a.hs[2 * b + 1] = d * s1 as f32;
        }
        a
    }

    /// The activations as the kernels see them (`d · q`), for tests.
    #[cfg(test)]
    pub fn dequantize(&self) -> Vec<f32> {
        self.qs
            .iter()
            .enumerate()
            .map(|(i, &q)| self.d[i / QB] * q as f32)
            .collect()
    }
}
