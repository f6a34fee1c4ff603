//! The integer dot-product tiles over canonical sub-blocks (see `formats`), per dispatch level.
//!
//! A group of up to `R` weight rows is decoded once into a small scratch (L1-resident), then
//! dotted with the activation rows `J` at a time: every decoded weight vector is reused for `J`
//! activation rows and every activation vector for `R` weight rows, with `R × J` float
//! accumulators held in registers. Per 32-weight sub-block and (row, activation) pair the work is
//! one integer dot (maddubs+madd on AVX2, dpbusd with VNNI), one convert and one FMA by
//! `weight scale × activation scale`; the offsets cost one short f32 dot per pair at the end.

use super::act::QAct;
use super::formats::{Format, QB};

/// Decoded weight rows: row `r`'s sub-block `b` is `u[(r·nb + b)·32..]`, its lane scales
/// `sc[(r·nb + b)·8..]` and offsets `off[(r·nb + b)·2..]`.
pub struct Scratch {
    pub nb: usize,
    pub u: Vec<u8>,
    pub sc: Vec<f32>,
    pub off: Vec<f32>,
}

impl Scratch {
    pub fn new(rows: usize, nb: usize) -> Self {
        Scratch {
            nb,
            u: vec![0; rows * nb * QB],
            sc: vec![0.0; rows * nb * 8],
            off: vec![0.0; rows * nb * 2],
        }
    }

    /// Decodes `n` consecutive GGUF rows (`src`, `n · row_bytes` long) into rows `0..n`.
    #[inline(always)]
    pub fn unpack<F: Format>(&mut self, src: &[u8], n: usize) {
        let subs = F::WEIGHTS / QB;
        let per_row = self.nb / subs;
        for (i, blk) in src.chunks_exact(F::BYTES).take(n * per_row).enumerate() {
            let s = i * subs; // sub-block index over all rows (rows are contiguous)
            F::unpack(
                blk,
                &mut self.u[s * QB..(s + subs) * QB],
                &mut self.sc[s * 8..(s + subs) * 8],
                &mut self.off[s * 2..(s + subs) * 2],
            );
        }
    }
}

/// Portable reference: the same arithmetic, one pair at a time (exact integer dots).
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
pub fn tile_scalar(
    signed: bool,
    s: &Scratch,
    r0: usize,
    nr: usize,
    a: &QAct,
    j0: usize,
    nj: usize,
    res: &mut [f32],
) {
    let nb = s.nb;
    for r in 0..nr {
        for j in 0..nj {
            let (rr, jj) = (r0 + r, j0 + j);
            let mut sum = 0f32;
            for b in 0..nb {
                let w = &s.u[(rr * nb + b) * QB..][..QB];
                let x = &a.qs[(jj * nb + b) * QB..][..QB];
                let sc = &s.sc[(rr * nb + b) * 8..][..8];
                let da = a.d[jj * nb + b];
                for lane in 0..8 {
                    let mut p = 0i32;
                    for k in 4 * lane..4 * lane + 4 {
                        let wv = if signed {
                            w[k] as i8 as i32
                        } else {
                            w[k] as i32
                        };
                        p += wv * x[k] as i32;
                    }
                    sum += p as f32 * (sc[lane] * da);
                }
            }
            if !signed {
                let off = &s.off[rr * nb * 2..(rr + 1) * nb * 2];
                let hs = &a.hs[jj * nb * 2..(jj + 1) * nb * 2];
                sum += off.iter().zip(hs).map(|(o, h)| o * h).sum::<f32>();
            }
            res[r * nj + j] = sum;
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// The 8-lane integer dot of 32 unsigned × 32 signed bytes (lane k sums bytes 4k..4k+4).
    pub trait Dot {
        unsafe fn dot(u: __m256i, s: __m256i) -> __m256i;
    }
    /// AVX2: pairs to i16 (no saturation: unsigned weights stay ≤ 63, |signed| ≤ 128), then i32.
    pub struct Madd;
    impl Dot for Madd {
        #[inline(always)]
        unsafe fn dot(u: __m256i, s: __m256i) -> __m256i {
            _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
        }
    }
    /// AVX-512 VNNI on 256-bit vectors: one instruction, straight to i32.
    pub struct Vnni;
    impl Dot for Vnni {
        #[inline(always)]
        unsafe fn dot(u: __m256i, s: __m256i) -> __m256i {
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
        }
    }

    #[inline(always)]
    pub(crate) unsafe fn hsum(v: __m256) -> f32 {
        let x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let x = _mm_add_ps(x, _mm_movehl_ps(x, x));
        _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)))
    }

    #[inline(always)]
    unsafe fn dot_f32(a: *const f32, b: *const f32, n: usize) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i)), _mm256_loadu_ps(b.add(i)), acc);
            i += 8;
        }
        let mut s = hsum(acc);
        while i < n {
            s += *a.add(i) * *b.add(i);
            i += 1;
        }
        s
    }

    /// `res[r·J + j] = row r0+r · activation j0+j` for an `R × J` tile.
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    pub unsafe fn tile<D: Dot, const SIGNED: bool, const R: usize, const J: usize>(
        s: &Scratch,
        r0: usize,
        a: &QAct,
        j0: usize,
        res: &mut [f32],
    ) {
        let nb = s.nb;
        let up = s.u.as_ptr().add(r0 * nb * QB);
        let sp = s.sc.as_ptr().add(r0 * nb * 8);
        let aq = a.qs.as_ptr().add(j0 * nb * QB);
        let ad = a.d.as_ptr().add(j0 * nb);
        let mut acc = [[_mm256_setzero_ps(); J]; R];
        for b in 0..nb {
            let mut w = [_mm256_setzero_si256(); R];
            let mut sc = [_mm256_setzero_ps(); R];
            for r in 0..R {
                w[r] = _mm256_loadu_si256(up.add((r * nb + b) * QB) as *const __m256i);
                sc[r] = _mm256_loadu_ps(sp.add((r * nb + b) * 8));
            }
            // Sign trick for i8 weights: |w| · (a with w's sign) keeps the unsigned operand.
            let wabs = if SIGNED {
                w.map(|v| _mm256_sign_epi8(v, v))
            } else {
                w
            };
            for j in 0..J {
                let av = _mm256_loadu_si256(aq.add((j * nb + b) * QB) as *const __m256i);
                let da = _mm256_set1_ps(*ad.add(j * nb + b));
                for r in 0..R {
                    let sv = if SIGNED {
                        _mm256_sign_epi8(av, w[r])
                    } else {
                        av
                    };
                    let p = _mm256_cvtepi32_ps(D::dot(wabs[r], sv));
                    acc[r][j] = _mm256_fmadd_ps(p, _mm256_mul_ps(sc[r], da), acc[r][j]);
                }
            }
        }
        for r in 0..R {
            for j in 0..J {
                let mut v = hsum(acc[r][j]);
                if !SIGNED {
                    let off = s.off.as_ptr().add((r0 + r) * nb * 2);
                    v += dot_f32(off, a.hs.as_ptr().add((j0 + j) * nb * 2), 2 * nb);
                }
                res[r * J + j] = v;
            }
        }
    }

    /// Instantiates `tile` for the runtime row count (`R` or 1) and activation count (1..=4).
    macro_rules! dispatch {
        ($d:ty, $signed:expr, $nr:expr, $nj:expr, $args:tt) => {
            match ($signed, $nr, $nj) {
                (false, 4, 4) => tile::<$d, false, 4, 4> $args,
                (false, 4, 3) => tile::<$d, false, 4, 3> $args,
                (false, 4, 2) => tile::<$d, false, 4, 2> $args,
                (false, 4, 1) => tile::<$d, false, 4, 1> $args,
                (false, 1, 4) => tile::<$d, false, 1, 4> $args,
                (false, 1, 3) => tile::<$d, false, 1, 3> $args,
                (false, 1, 2) => tile::<$d, false, 1, 2> $args,
                (false, 1, 1) => tile::<$d, false, 1, 1> $args,
                (true, 4, 4) => tile::<$d, true, 4, 4> $args,
                (true, 4, 3) => tile::<$d, true, 4, 3> $args,
                (true, 4, 2) => tile::<$d, true, 4, 2> $args,
                (true, 4, 1) => tile::<$d, true, 4, 1> $args,
                (true, 1, 4) => tile::<$d, true, 1, 4> $args,
                (true, 1, 3) => tile::<$d, true, 1, 3> $args,
                (true, 1, 2) => tile::<$d, true, 1, 2> $args,
                (true, 1, 1) => tile::<$d, true, 1, 1> $args,
                _ => unreachable!("tile {}x{}", $nr, $nj),
            }
        };
    }

    /// AVX2 tiles. `nr` is 4 or 1, `nj` 1..=4.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile_avx2(
        signed: bool,
        s: &Scratch,
        r0: usize,
        nr: usize,
        a: &QAct,
        j0: usize,
        nj: usize,
        res: &mut [f32],
    ) {
        dispatch!(Madd, signed, nr, nj, (s, r0, a, j0, res))
    }

    /// AVX-512 VNNI (+VL) tiles: 32 vector registers, so 4 × 4 accumulators fit.
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile_vnni(
        signed: bool,
        s: &Scratch,
        r0: usize,
        nr: usize,
        a: &QAct,
        j0: usize,
        nj: usize,
        res: &mut [f32],
    ) {
        dispatch!(Vnni, signed, nr, nj, (s, r0, a, j0, res))
    }

    /// The decoders and the activation quantizer, compiled with AVX2 so that they vectorise.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn unpack_avx2<F: Format>(s: &mut Scratch, src: &[u8], n: usize) {
        use super::super::unpack_x86 as x;
        use candle_core::quantized::GgmlDType as T;
        let blocks = n * s.nb / (F::WEIGHTS / QB);
        assert!(src.len() >= blocks * F::BYTES && s.u.len() >= blocks * F::WEIGHTS);
        let (p, u, sc, off) = (
            src.as_ptr(),
            s.u.as_mut_ptr(),
            s.sc.as_mut_ptr(),
            s.off.as_mut_ptr(),
        );
        // Prefetch the next group (the caller's rows are consecutive): its decode then finds it
        // in cache while this group's tiles run.
        let mut o = 0;
        while o < src.len() {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(src.len() + o) as *const i8);
            o += 64;
        }
        match F::ID {
            T::Q4_0 => x::rows::<x::Q4_0>(p, blocks, u, sc, off),
            T::Q4_1 => x::rows::<x::Q4_1>(p, blocks, u, sc, off),
            T::Q5_0 => x::rows::<x::Q5_0>(p, blocks, u, sc, off),
            T::Q5_1 => x::rows::<x::Q5_1>(p, blocks, u, sc, off),
            T::Q8_0 => x::rows::<x::Q8_0>(p, blocks, u, sc, off),
            T::Q4K => x::q4k(p, blocks, u, sc, off),
            T::Q5K => x::q5k(p, blocks, u, sc, off),
            T::Q6K => x::q6k(p, blocks, u, sc, off),
            // Q2K, Q3K: the portable decoder, vectorised by the compiler as far as it goes.
            _ => s.unpack::<F>(src, n),
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn quantize_avx2(x: &[f32], m: usize, cols: usize) -> QAct {
        QAct::quantize(x, m, cols)
    }
}
