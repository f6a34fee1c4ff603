//! Matrix products with GGUF-quantized weights on the CPU, at llama.cpp-like speed.
//!
//! `y = x · Wᵀ` with `W` kept in its GGUF blocks. [`QMatrix::matmul_t`] keeps the activations
//! in f32: exact `x · dequantize(W)ᵀ` up to f32 summation order (`f32path`). Rounding them to
//! 8-bit blocks moved SmolLM2-135M's hidden state by 0.9% after one block and its logit-lens
//! gaps by up to 0.08 (real activations have outliers that flatten a block's other 31 values).
//! - m ≤ 48 (decode, verification, short prompts): each weight sub-block is decoded to f32 in
//!   registers and FMA'd with every activation row of a tile (`fdot`, `fvec`): on AVX-512F one
//!   tile spans up to 8 rows, so a weight is decoded once per product, and the 4- and 5-bit
//!   types look their weights up among the block's 16 / 32 possible values; on AVX2+FMA tiles
//!   of 4 rows. Above 8 rows, even chunks of at most 7 (`f32path`).
//! - m > 48 (prefill): tiles of 128 weight rows dequantized into a per-chunk f32 scratch, then
//!   the gemm crate's f32 GEMM (single-threaded inside our rayon chunks).
//! - F32, F16, BF16 weights, and the scalar level of every type: decode a row, FMA dot (`float`).
//!
//! Measured on the SmolLM2 shapes (30 Q4_1 layers + Q8_0 head, 2 threads, best of N), f32 vs
//! int8: m=1 4.2 vs 3.9 ms, m=4 8.3 vs 6.7, m=8 16.8 vs 14.2, m=128 146 vs 156 ms.
//!
//! [`QMatrix::matmul_t_int8`] keeps the integer path (faster decode of the Q8_0 head, less exact):
//! activations quantized once per call to 8-bit blocks of 32 (`act`); each group of 4 weight
//! rows decoded once and dotted with integers against all activation rows, from registers for at
//! most one tile of activation rows on a 32-weight type (`direct`, m = 1..4), else through a
//! small canonical scratch (`formats`, `kernel`). Output rows are split into a few large chunks
//! over rayon (both paths).
//!
//! Integer kernels per type (levels detected at run time; the scalar level is the reference):
//! - Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: SIMD decoders plus the `direct` path — AVX-512 VNNI
//!   (`vpdpbusd` on 256-bit vectors) when available, else AVX2 (`vpmaddubsw`).
//! - Q4K, Q5K, Q6K: SIMD decoders (scratch path for every m); Q2K, Q3K: portable decoders.
//! - F32, F16, BF16: the generic path (`float`).
//! - Q8_1, Q8K: refused by [`QMatrix::new`] (activation formats, never GGUF weights).

mod act;
#[cfg(target_arch = "x86_64")]
mod direct;
mod f32path;
#[cfg(target_arch = "x86_64")]
mod fdot;
mod float;
mod formats;
#[cfg(target_arch = "x86_64")]
mod fvec;
mod kernel;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod unpack_x86;

use anyhow::{bail, ensure, Result};
use candle_core::quantized::GgmlDType;
use formats::{decode_row, Format};
use kernel::Scratch;
use rayon::prelude::*;

/// A weight matrix `[rows, cols]` (rows = output features, cols = input features, as HF/GGUF store
/// linears), kept in its GGUF block format: each row is `cols / block_size` consecutive blocks.
#[derive(Clone, Debug)]
pub struct QMatrix {
    dtype: GgmlDType,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

/// Instruction-set level of the kernels. Chosen once per call by [`Level::detect`]; tests pick
/// each one explicitly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Scalar,
    Avx2,
    Vnni,
}

impl Level {
    fn detect() -> Level {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") && has!("f16c") {
                if has!("avx512f") && has!("avx512vl") && has!("avx512vnni") {
                    return Level::Vnni;
                }
                return Level::Avx2;
            }
        }
        Level::Scalar
    }

    /// Activation rows per tile: AVX2 has 16 vector registers, so 4 × 2 accumulators.
    fn tile_j(self) -> usize {
        match self {
            Level::Avx2 => 2,
            _ => 4,
        }
    }
}

/// Weight rows decoded together (the tile height).
const TILE_R: usize = 4;

/// Below this many multiply-adds a product stays on the calling thread.
const PARALLEL_FROM: usize = 1 << 16;

/// The output, written by several chunks at disjoint indices.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: chunks write disjoint elements (their own output rows) of one live buffer.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl QMatrix {
    /// Checks `cols % dtype.block_size() == 0` and `data.len() == rows * row_bytes`; clear anyhow error otherwise.
    pub fn new(dtype: GgmlDType, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self> {
        if matches!(dtype, GgmlDType::Q8_1 | GgmlDType::Q8K) {
            bail!("QMatrix: {dtype:?} is an activation format, not supported for weights");
        }
        let bs = dtype.block_size();
        ensure!(
            cols.is_multiple_of(bs),
            "QMatrix: {cols} columns is not a multiple of the {dtype:?} block size {bs}"
        );
        let row_bytes = cols / bs * dtype.type_size();
        ensure!(
            data.len() == rows * row_bytes,
            "QMatrix: {dtype:?} [{rows}, {cols}] needs {} bytes ({row_bytes} per row), got {}",
            rows * row_bytes,
            data.len()
        );
        Ok(QMatrix {
            dtype,
            rows,
            cols,
            data,
        })
    }

    pub fn dtype(&self) -> GgmlDType {
        self.dtype
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn row_bytes(&self) -> usize {
        self.cols / self.dtype.block_size() * self.dtype.type_size()
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }
    /// The raw bytes, giving the buffer back (e.g. to rebuild a tensor).
    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }

    fn is_float(&self) -> bool {
        matches!(
            self.dtype,
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16
        )
    }

    /// y = x · Wᵀ: `x` is `[m, cols]` row-major f32, result `[m, rows]` row-major f32, computed
    /// with f32 activations (exact up to f32 summation order; see the module header).
    /// Parallel over output rows with rayon (the engine calls it from inside its rayon pool of 2 threads).
    pub fn matmul_t(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_f32(x, m, f32path::FLevel::detect())
    }

    /// The same product with the activations rounded to 8-bit blocks of 32 (integer dots):
    /// faster, but off by the activation rounding.
    pub fn matmul_t_int8(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_level(x, m, Level::detect())
    }

    fn check_x(&self, x: &[f32], m: usize) {
        assert_eq!(
            x.len(),
            m * self.cols,
            "matmul_t: x is not [{m}, {}]",
            self.cols
        );
    }

    /// Runs `run(r0, r1)` over a few large chunks of output rows (multiples of `TILE_R`).
    fn for_chunks(&self, m: usize, run: impl Fn(usize, usize) + Sync) {
        // 4 chunks per thread balances a busy box's uneven threads without per-row task
        // overhead (1, 2, 4, 8 per thread measured within noise of each other).
        let threads = rayon::current_num_threads();
        let chunks = if self.rows * self.cols * m < PARALLEL_FROM || threads == 1 {
            1
        } else {
            (threads * 4).min(self.rows.div_ceil(TILE_R))
        };
        let per = self.rows.div_ceil(chunks).div_ceil(TILE_R) * TILE_R;
        let go = |c: usize| {
            let (r0, r1) = (c * per, ((c + 1) * per).min(self.rows));
            if r0 < r1 {
                run(r0, r1)
            }
        };
        if chunks == 1 {
            go(0);
        } else {
            (0..chunks).into_par_iter().for_each(go);
        }
    }

    fn matmul_level(&self, x: &[f32], m: usize, level: Level) -> Vec<f32> {
        self.check_x(x, m);
        let mut out = vec![0f32; m * self.rows];
        if m == 0 || self.rows == 0 {
            return out;
        }
        let act = if self.is_float() {
            None
        } else {
            Some(match level {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: Avx2/Vnni are only detected with AVX2, FMA and F16C present.
                Level::Avx2 | Level::Vnni => unsafe { kernel::x86::quantize_avx2(x, m, self.cols) },
                _ => act::QAct::quantize(x, m, self.cols),
            })
        };
        let o = Out(out.as_mut_ptr());
        self.for_chunks(m, |r0, r1| {
            // Capture `o` whole: a closure capturing only the raw-pointer field isn't Sync.
            #[allow(clippy::redundant_locals)]
            let o = o;
            match &act {
                Some(a) => self.chunk_quant(level, a, r0, r1, o),
                None => self.chunk_float(level, x, m, r0, r1, o),
            }
        });
        out
    }

    fn chunk_quant(&self, level: Level, a: &act::QAct, r0: usize, r1: usize, o: Out) {
        use formats::*;
        match self.dtype {
            GgmlDType::Q4_0 => self.rows_quant::<Q4_0>(level, a, r0, r1, o),
            GgmlDType::Q4_1 => self.rows_quant::<Q4_1>(level, a, r0, r1, o),
            GgmlDType::Q5_0 => self.rows_quant::<Q5_0>(level, a, r0, r1, o),
            GgmlDType::Q5_1 => self.rows_quant::<Q5_1>(level, a, r0, r1, o),
            GgmlDType::Q8_0 => self.rows_quant::<Q8_0>(level, a, r0, r1, o),
            GgmlDType::Q2K => self.rows_quant::<Q2K>(level, a, r0, r1, o),
            GgmlDType::Q3K => self.rows_quant::<Q3K>(level, a, r0, r1, o),
            GgmlDType::Q4K => self.rows_quant::<Q4K>(level, a, r0, r1, o),
            GgmlDType::Q5K => self.rows_quant::<Q5K>(level, a, r0, r1, o),
            GgmlDType::Q6K => self.rows_quant::<Q6K>(level, a, r0, r1, o),
            other => unreachable!("no integer kernel for {other:?}"),
        }
    }

    /// Output rows `r0..r1` for every activation row, `TILE_R` weight rows at a time.
    fn rows_quant<F: Format>(&self, level: Level, a: &act::QAct, r0: usize, r1: usize, o: Out) {
        let (nb, rb, m) = (self.cols / formats::QB, self.row_bytes(), a.m);
        let mut s = Scratch::new(TILE_R, nb);
        let mut res = [0f32; TILE_R * 4];
        let jt = level.tile_j();
        let mut row = r0;
        while row < r1 {
            let nr = TILE_R.min(r1 - row);
            let src = &self.data[row * rb..(row + nr) * rb];
            // At most one tile of activation rows on a 32-weight type: decode in registers
            // (`direct`). Measured: with more rows the scratch reuse wins.
            let direct = level != Level::Scalar && F::WEIGHTS == formats::QB && m <= jt;
            match level {
                _ if direct => {}
                #[cfg(target_arch = "x86_64")]
                // SAFETY: detected AVX2+FMA+F16C.
                Level::Avx2 | Level::Vnni => unsafe {
                    kernel::x86::unpack_avx2::<F>(&mut s, src, nr)
                },
                _ => s.unpack::<F>(src, nr),
            }
            // A full group as one R-row tile; a ragged tail row by row.
            let (tr, groups) = if nr == TILE_R { (TILE_R, 1) } else { (1, nr) };
            for g in 0..groups {
                let sr = g * tr;
                for j0 in (0..m).step_by(jt) {
                    let nj = jt.min(m - j0);
                    match level {
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: level detected; `src` holds rows `sr..sr + tr` of this group.
                        _ if direct => unsafe {
                            direct::run(
                                level == Level::Vnni,
                                F::ID,
                                src.as_ptr().add(sr * rb),
                                rb,
                                tr,
                                nb,
                                a,
                                j0,
                                nj,
                                &mut res,
                            )
                        },
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: the level was detected on this CPU.
                        Level::Avx2 => unsafe {
                            kernel::x86::tile_avx2(F::SIGNED, &s, sr, tr, a, j0, nj, &mut res)
                        },
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: as above (AVX-512 F/VL/VNNI).
                        Level::Vnni => unsafe {
                            kernel::x86::tile_vnni(F::SIGNED, &s, sr, tr, a, j0, nj, &mut res)
                        },
                        _ => kernel::tile_scalar(F::SIGNED, &s, sr, tr, a, j0, nj, &mut res),
                    }
                    for r in 0..tr {
                        for j in 0..nj {
                            // SAFETY: index < m · rows, and row `row + sr + r` belongs to this chunk only.
                            unsafe {
                                *o.0.add((j0 + j) * self.rows + row + sr + r) = res[r * nj + j]
                            };
                        }
                    }
                }
            }
            row += nr;
        }
    }

    fn chunk_float(&self, level: Level, x: &[f32], m: usize, r0: usize, r1: usize, o: Out) {
        let rb = self.row_bytes();
        let mut res = vec![0f32; (r1 - r0) * m];
        let dt = self.dtype;
        float::rows(
            |src: &[u8], out: &mut [f32]| float::decode_row(dt, src, out),
            &self.data[r0 * rb..r1 * rb],
            rb,
            x,
            m,
            self.cols,
            level != Level::Scalar,
            &mut res,
        );
        for r in 0..r1 - r0 {
            for j in 0..m {
                // SAFETY: as in `rows_quant`.
                unsafe { *o.0.add(j * self.rows + r0 + r) = res[r * m + j] };
            }
        }
    }

    /// Decodes row `row` to f32 (`out.len() == cols`).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        assert!(
            row < self.rows && out.len() == self.cols,
            "dequantize_row: row {row} of {}, out {}",
            self.rows,
            out.len()
        );
        let rb = self.row_bytes();
        decode_row(self.dtype, &self.data[row * rb..(row + 1) * rb], out);
    }

    /// The whole matrix as f32, `[rows, cols]` row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        if self.cols > 0 {
            for (r, o) in out.chunks_exact_mut(self.cols).enumerate() {
                self.dequantize_row(r, o);
            }
        }
        out
    }

    /// Rows stacked (all parts must share dtype and cols): for fusing q|k|v and gate|up projections.
    pub fn concat_rows(parts: &[&QMatrix]) -> Result<QMatrix> {
        let Some(first) = parts.first() else {
            bail!("concat_rows: no parts")
        };
        let mut data = Vec::with_capacity(parts.iter().map(|p| p.data.len()).sum());
        for (i, p) in parts.iter().enumerate() {
            ensure!(
                p.dtype == first.dtype && p.cols == first.cols,
                "concat_rows: part {i} is {:?} [.., {}], part 0 is {:?} [.., {}]",
                p.dtype,
                p.cols,
                first.dtype,
                first.cols
            );
            data.extend_from_slice(&p.data);
        }
        let rows = parts.iter().map(|p| p.rows).sum();
        QMatrix::new(first.dtype, rows, first.cols, data)
    }

    /// A new matrix whose row i is row `order[i]` of self (permutations and subsets, e.g. un-permuting
    /// llama.cpp's rotary row order, or the rows of a few label tokens of the LM head). Errors on an out-of-range index.
    pub fn select_rows(&self, order: &[usize]) -> Result<QMatrix> {
        let rb = self.row_bytes();
        let mut data = Vec::with_capacity(order.len() * rb);
        for &r in order {
            ensure!(
                r < self.rows,
                "select_rows: row {r} out of range (matrix has {} rows)",
                self.rows
            );
            data.extend_from_slice(&self.data[r * rb..(r + 1) * rb]);
        }
        QMatrix::new(self.dtype, order.len(), self.cols, data)
    }
}
