//! The small-`m` path for the 32-weight block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): blocks are
//! decoded straight into registers and used at once, skipping the scratch round trip. With one
//! to four activation rows each decoded block serves too few dots to amortise a store and reload
//! (decode is then bound by decode work and weight streaming, not by the dots).

use super::act::QAct;
use super::kernel::x86::{hsum, Dot, Madd, Vnni};
use super::unpack_x86::{self as u, Dec};
use candle_core::quantized::GgmlDType;
use std::arch::x86_64::*;

/// `res[r·J + j]` = row `r` (at `src + r·rb`) · activation `j0 + j`.
#[inline(always)]
unsafe fn tile<D: Dot, C: Dec, const R: usize, const J: usize>(
    src: *const u8,
    rb: usize,
    nb: usize,
    a: &QAct,
    j0: usize,
    res: &mut [f32],
) {
    let aq = a.qs.as_ptr().add(j0 * nb * 32);
    let ad = a.d.as_ptr().add(j0 * nb);
    let ah = a.hs.as_ptr().add(j0 * nb * 2);
    let mut acc = [[_mm256_setzero_ps(); J]; R];
    // Offset terms: lanes 0/1 = the two halves' `off · d·Σq`.
    let mut oacc = [[_mm_setzero_ps(); J]; R];
    // The R rows are read interleaved (block b of each), which the hardware prefetcher follows
    // poorly; fetch the group two ahead (contiguous bytes) evenly over this group's blocks.
    let (ahead, step) = (src.wrapping_add(2 * R * rb), R * C::BYTES);
    for b in 0..nb {
        let mut o = 0;
        while o < step {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(b * step + o) as *const i8);
            o += 64;
        }
        let mut w = [_mm256_setzero_si256(); R];
        let mut sc = [_mm256_setzero_ps(); R];
        let mut off = [_mm_setzero_ps(); R];
        for r in 0..R {
            let (q, s, o) = C::block(src.add(r * rb + b * C::BYTES));
            w[r] = q;
            sc[r] = s;
            off[r] = _mm_shuffle_ps(o, o, 0);
        }
        let wabs = if C::SIGNED {
            w.map(|v| _mm256_sign_epi8(v, v))
        } else {
            w
        };
        for j in 0..J {
            let av = _mm256_loadu_si256(aq.add((j * nb + b) * 32) as *const __m256i);
            let da = _mm256_set1_ps(*ad.add(j * nb + b));
            let hs = _mm_castsi128_ps(_mm_loadl_epi64(ah.add((j * nb + b) * 2) as *const __m128i));
            for r in 0..R {
                let sv = if C::SIGNED {
                    _mm256_sign_epi8(av, w[r])
                } else {
                    av
                };
                let p = _mm256_cvtepi32_ps(D::dot(wabs[r], sv));
                acc[r][j] = _mm256_fmadd_ps(p, _mm256_mul_ps(sc[r], da), acc[r][j]);
                if !C::SIGNED {
                    oacc[r][j] = _mm_fmadd_ps(off[r], hs, oacc[r][j]);
                }
            }
        }
    }
    for r in 0..R {
        for j in 0..J {
            let o = oacc[r][j];
            res[r * J + j] = hsum(acc[r][j]) + _mm_cvtss_f32(o) + _mm_cvtss_f32(_mm_movehdup_ps(o));
        }
    }
}

macro_rules! dispatch {
    ($d:ty, $c:ty, $nr:expr, $nj:expr, $args:tt) => {
        match ($nr, $nj) {
            (4, 1) => tile::<$d, $c, 4, 1> $args,
            (4, 2) => tile::<$d, $c, 4, 2> $args,
            (4, 3) => tile::<$d, $c, 4, 3> $args,
            (4, 4) => tile::<$d, $c, 4, 4> $args,
            (1, 1) => tile::<$d, $c, 1, 1> $args,
            (1, 2) => tile::<$d, $c, 1, 2> $args,
            (1, 3) => tile::<$d, $c, 1, 3> $args,
            (1, 4) => tile::<$d, $c, 1, 4> $args,
            _ => unreachable!("direct tile {}x{}", $nr, $nj),
        }
    };
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn vnni<C: Dec>(
    src: *const u8,
    rb: usize,
    nr: usize,
    nb: usize,
    a: &QAct,
    j0: usize,
    nj: usize,
    res: &mut [f32],
) {
    dispatch!(Vnni, C, nr, nj, (src, rb, nb, a, j0, res))
}

#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn avx2<C: Dec>(
    src: *const u8,
    rb: usize,
    nr: usize,
    nb: usize,
    a: &QAct,
    j0: usize,
    nj: usize,
    res: &mut [f32],
) {
    dispatch!(Madd, C, nr, nj, (src, rb, nb, a, j0, res))
}

/// Runs one `nr × nj` tile (`nr` 4 or 1, `nj` 1..=4) of a 32-weight type.
///
/// # Safety
/// AVX2+FMA+F16C must be present (and AVX-512 F/VL/VNNI when `use_vnni`); `src` must hold `nr`
/// rows of `rb` bytes, each `nb` blocks of `id`; `a` must have rows `j0..j0 + nj` of `nb` blocks.
#[allow(clippy::too_many_arguments)]
pub unsafe fn run(
    use_vnni: bool,
    id: GgmlDType,
    src: *const u8,
    rb: usize,
    nr: usize,
    nb: usize,
    a: &QAct,
    j0: usize,
    nj: usize,
    res: &mut [f32],
) {
    macro_rules! go {
        ($c:ty) => {
            if use_vnni {
                vnni::<$c>(src, rb, nr, nb, a, j0, nj, res)
            } else {
                avx2::<$c>(src, rb, nr, nb, a, j0, nj, res)
            }
        };
    }
    match id {
        GgmlDType::Q4_0 => go!(u::Q4_0),
        GgmlDType::Q4_1 => go!(u::Q4_1),
        GgmlDType::Q5_0 => go!(u::Q5_0),
        GgmlDType::Q5_1 => go!(u::Q5_1),
        GgmlDType::Q8_0 => go!(u::Q8_0),
        other => unreachable!("no direct kernel for {other:?}"),
    }
}
