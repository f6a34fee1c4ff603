//! `matmul_t` with f32 activations: exact `x · dequantize(W)ᵀ` up to f32 summation order.
//!
//! - m ≤ `CHUNKED_M` (decode, verification, short prompts): weights decoded to f32 in registers
//!   and FMA'd with every activation row of a tile (`fdot`), in even chunks of at most `SMALL_M`
//!   rows; float weights and the scalar level decode a row to f32 and dot it (`float`).
//! - m > `CHUNKED_M` (prefill): tiles of `WIDE_TILE` weight rows dequantized into a per-chunk f32
//!   scratch, then one f32 GEMM per tile (gemm crate, single-threaded inside our rayon chunks).

use super::{decode_row, float, formats, kernel::Scratch, Out, QMatrix};
use candle_core::quantized::GgmlDType;

/// Largest activation row count of one register-kernel call.
pub const SMALL_M: usize = 8;

/// Up to this many activation rows go through the register kernel in even chunks of at most
/// `PIECE_M` (a row's bits do not depend on the rows beside it, so chunking keeps them);
/// above it the GEMM path wins. Measured on SmolLM2 (full passes of N rows against one): the
/// GEMM path cost 8.0× at 9 rows, 9.5× at 16, 15× at 32 and ~17× at 40; chunks 3.6×, 5.7×,
/// 10.8–12.1× and 15.2×, and 25× at 64, where the GEMM path is cheaper again.
pub const CHUNKED_M: usize = 48;

/// Rows per register-kernel call when chunking: a full pass of 8 rows measured ~4× one row
/// against ~2.4× for 7 (the widest AVX-512 tile is the slowest per row).
const PIECE_M: usize = 7;

/// Weight rows dequantized per GEMM call: 128 × 1536 f32 = 768 KiB stays in L2.
const WIDE_TILE: usize = 128;

/// Instruction-set level of the f32 kernels (the integer path's `Level` also needs VNNI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FLevel {
    Scalar,
    Avx2,
    Avx512,
}

impl FLevel {
    pub fn detect() -> FLevel {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") && has!("f16c") {
                return if has!("avx512f") {
                    FLevel::Avx512
                } else {
                    FLevel::Avx2
                };
            }
        }
        FLevel::Scalar
    }
}

/// Binds `$f` to the `formats` type of a quantized dtype.
macro_rules! with_format {
    ($dt:expr, $f:ident => $e:expr) => {{
        use formats::*;
        match $dt {
            GgmlDType::Q4_0 => { type $f = Q4_0; $e }
            GgmlDType::Q4_1 => { type $f = Q4_1; $e }
            GgmlDType::Q5_0 => { type $f = Q5_0; $e }
            GgmlDType::Q5_1 => { type $f = Q5_1; $e }
            GgmlDType::Q8_0 => { type $f = Q8_0; $e }
            GgmlDType::Q2K => { type $f = Q2K; $e }
            GgmlDType::Q3K => { type $f = Q3K; $e }
            GgmlDType::Q4K => { type $f = Q4K; $e }
            GgmlDType::Q5K => { type $f = Q5K; $e }
            GgmlDType::Q6K => { type $f = Q6K; $e }
            other => unreachable!("not a block-quantized dtype: {other:?}"),
        }
    }};
}

impl QMatrix {
    pub(super) fn matmul_f32(&self, x: &[f32], m: usize, level: FLevel) -> Vec<f32> {
        self.check_x(x, m);
        let mut out = vec![0f32; m * self.rows];
        if m == 0 || self.rows == 0 {
            return out;
        }
        let o = Out(out.as_mut_ptr());
        let piece = if m < SMALL_M {
            m
        } else {
            m.div_ceil(m.div_ceil(PIECE_M))
        };
        self.for_chunks(m, |r0, r1| {
            #[allow(clippy::redundant_locals)]
            let o = o;
            if m > CHUNKED_M {
                return self.wide(level, x, m, r0, r1, o);
            }
            for j0 in (0..m).step_by(piece) {
                let rows = piece.min(m - j0);
                // SAFETY: activation rows j0.. start at output row j0 · self.rows, in bounds.
                let at = Out(unsafe { o.0.add(j0 * self.rows) });
                let xs = &x[j0 * self.cols..(j0 + rows) * self.cols];
                self.small(level, xs, rows, r0, r1, at)
            }
        });
        out
    }

    fn small(&self, level: FLevel, x: &[f32], m: usize, r0: usize, r1: usize, o: Out) {
        #[cfg(target_arch = "x86_64")]
        if level != FLevel::Scalar && !self.is_float() {
            // SAFETY: the level was detected on this CPU.
            return unsafe { self.small_x86(level == FLevel::Avx512, x, m, r0, r1, o) };
        }
        let rb = self.row_bytes();
        let mut res = vec![0f32; (r1 - r0) * m];
        let dt = self.dtype;
        float::rows(
            |src: &[u8], out: &mut [f32]| decode_row(dt, src, out),
            &self.data[r0 * rb..r1 * rb],
            rb,
            x,
            m,
            self.cols,
            level != FLevel::Scalar,
            &mut res,
        );
        for r in 0..r1 - r0 {
            for j in 0..m {
                // SAFETY: index < m · rows; row `r0 + r` belongs to this chunk only.
                unsafe { *o.0.add(j * self.rows + r0 + r) = res[r * m + j] };
            }
        }
    }

    /// Register tiles: 32-weight types decoded straight from their bytes, the K-quants via the
    /// canonical scratch (their decoders write it).
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn small_x86(&self, wide: bool, x: &[f32], m: usize, r0: usize, r1: usize, o: Out) {
        use super::fdot::{self, Canon, Direct};
        use super::unpack_x86 as u;
        use std::marker::PhantomData;
        let (nb, rb, k) = (self.cols / formats::QB, self.row_bytes(), self.cols);
        let (tr, tj) = fdot::tile_shape(wide, m);
        let mut res = [0f32; 16];
        let mut s = Scratch::new(tr, nb);
        let direct = self.dtype.block_size() == formats::QB;
        let mut row = r0;
        while row < r1 {
            let nr = if r1 - row >= tr { tr } else { 1 };
            let p = self.data.as_ptr().add(row * rb);
            if !direct {
                let src = &self.data[row * rb..(row + nr) * rb];
                with_format!(self.dtype, F => super::kernel::x86::unpack_avx2::<F>(&mut s, src, nr));
            }
            for j0 in (0..m).step_by(tj) {
                let nj = tj.min(m - j0);
                let xp = x.as_ptr().add(j0 * k);
                macro_rules! go {
                    ($c:ty) => {{
                        let src = Direct::<$c> {
                            p,
                            rb,
                            group: nr,
                            _c: PhantomData,
                        };
                        fdot::run(wide, &src, nr, nb, xp, k, nj, &mut res)
                    }};
                }
                match self.dtype {
                    GgmlDType::Q4_0 => go!(u::Q4_0),
                    GgmlDType::Q4_1 => go!(u::Q4_1),
                    GgmlDType::Q5_0 => go!(u::Q5_0),
                    GgmlDType::Q5_1 => go!(u::Q5_1),
                    GgmlDType::Q8_0 => go!(u::Q8_0),
                    _ => {
                        let src = Canon::<false> { s: &s, r0: 0 };
                        fdot::run(wide, &src, nr, nb, xp, k, nj, &mut res)
                    }
                }
                for r in 0..nr {
                    for j in 0..nj {
                        // SAFETY: as in `small`.
                        *o.0.add((j0 + j) * self.rows + row + r) = res[r * nj + j];
                    }
                }
            }
            row += nr;
        }
    }

    /// Prefill: dequantize `WIDE_TILE` rows at a time, then `out[:, tile] = x · tileᵀ`.
    fn wide(&self, level: FLevel, x: &[f32], m: usize, r0: usize, r1: usize, o: Out) {
        let (k, rb) = (self.cols, self.row_bytes());
        let tw = WIDE_TILE.min(r1 - r0);
        let mut w = vec![0f32; tw * k];
        let mut s: Option<Scratch> = None;
        for t0 in (r0..r1).step_by(tw) {
            let nr = tw.min(r1 - t0);
            let src = &self.data[t0 * rb..(t0 + nr) * rb];
            if cfg!(target_arch = "x86_64") && level != FLevel::Scalar && !self.is_float() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: level detected; `s` holds `nr` rows after the unpack, `w` `nr · k`.
                unsafe {
                    let s = s.get_or_insert_with(|| Scratch::new(tw, k / formats::QB));
                    with_format!(self.dtype, F => super::kernel::x86::unpack_avx2::<F>(s, src, nr));
                    let (wide, signed) = (level == FLevel::Avx512, self.dtype == GgmlDType::Q8_0);
                    super::fdot::dequantize(wide, s, nr, signed, w.as_mut_ptr());
                }
            } else {
                self.decode_rows(src, &mut w[..nr * k]);
            }
            // SAFETY: dst is columns t0..t0+nr of the [m, rows] output (this chunk's only), lhs
            // `x` [m, k] row-major, rhs (k, n) = w[n·k + k] — all in bounds.
            unsafe {
                gemm::gemm(
                    m,
                    nr,
                    k,
                    o.0.add(t0),
                    1,
                    self.rows as isize,
                    false,
                    x.as_ptr(),
                    1,
                    k as isize,
                    w.as_ptr(),
                    k as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            };
        }
    }

    fn decode_rows(&self, src: &[u8], out: &mut [f32]) {
        for (raw, row) in src
            .chunks_exact(self.row_bytes())
            .zip(out.chunks_exact_mut(self.cols))
        {
            decode_row(self.dtype, raw, row);
        }
    }
}
