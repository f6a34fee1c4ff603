//! The small-`m` f32-activation kernel (decode m = 1, verification batches up to `SMALL_M`).
//!
//! Each weight sub-block of 32 is decoded to f32 in registers as `w = scale · u + off` (the
//! canonical form of `formats`, one rounding per weight, so `w` is candle's dequantized value up
//! to 1 ulp) and FMA'd with the f32 activations of every row of the tile. The activations stay
//! exact; only the f32 summation order differs from `x · dequantize(W)ᵀ`. Blocks come straight
//! from the GGUF bytes for the 32-weight types (`Direct`, the `unpack_x86` register decoders) or
//! from the canonical scratch for the K-quants (`Canon`). On AVX-512 the 4- and 5-bit types look
//! their weights up in the block's 16 / 32 possible values (`Dec16`), the same bits for less
//! work: decode at m = 1 is bound by instructions, not by memory bandwidth.

use super::formats::QB;
use super::fvec::{Vf, V256, V512};
use super::kernel::Scratch;
use super::unpack_x86::{self as u, Dec};
use std::arch::x86_64::*;
use std::marker::PhantomData;

/// Where a tile's canonical sub-blocks come from: `(u, [scale; 2], [off; 2])` of row `r`,
/// sub-block `b` (index 0/1 = the 16-weight halves).
pub trait Src {
    /// Signed i8 `u` and no offsets (Q8_0).
    const SIGNED: bool;
    unsafe fn get(&self, r: usize, b: usize) -> (__m256i, [f32; 2], [f32; 2]);
    /// Sub-block `b` of row `r` as two 16-lane vectors of f32 weights (AVX-512F): each weight
    /// `fma(u, scale, off)` (Q8_0: `u · scale`), one rounding, as [`weights`] decodes it.
    #[inline(always)]
    unsafe fn weights16(&self, r: usize, b: usize) -> [__m512; 2] {
        let blk = self.get(r, b);
        [
            weights::<V512>(blk, 0, 0, Self::SIGNED).0,
            weights::<V512>(blk, 1, 1, Self::SIGNED).0,
        ]
    }
    #[inline(always)]
    unsafe fn prefetch(&self, _b: usize) {}
}

/// AVX-512 decoders of the 32-weight types straight to f32 weights. The 4- and 5-bit types
/// compute their 16 or 32 possible weights once per block (`fma(v, scale, off)` for v = 0, 1, …:
/// the same rounding as decoding each weight) and look each weight up (`vpermps` reads only
/// the index's low 4 bits, `vpermt2ps` 5), instead of converting and scaling all 32: fewer
/// instructions per block where decode (m = 1) is bound by them, not by memory.
pub trait Dec16: Dec {
    unsafe fn weights16(p: *const u8) -> [__m512; 2];
}

/// The f16 at `p` in every lane.
#[inline(always)]
unsafe fn f16_splat(p: *const u8) -> __m512 {
    _mm512_cvtph_ps(_mm256_set1_epi16((p as *const i16).read_unaligned()))
}

/// The f16 pair (scale, offset) at `p`, each in every lane.
#[inline(always)]
unsafe fn f16_pair_splat(p: *const u8) -> (__m512, __m512) {
    let pairs = _mm512_cvtph_ps(_mm256_set1_epi32((p as *const i32).read_unaligned()));
    (
        _mm512_permute_ps::<0b00_00_00_00>(pairs),
        _mm512_permute_ps::<0b01_01_01_01>(pairs),
    )
}

/// `fma(v, scale, off)` for v = `first`, …, `first` + 15.
#[inline(always)]
unsafe fn table16(first: f32, scale: __m512, off: __m512) -> __m512 {
    let v = _mm512_add_ps(
        _mm512_setr_ps(
            0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
        ),
        _mm512_set1_ps(first),
    );
    _mm512_fmadd_ps(v, scale, off)
}

/// 16 nibble bytes at `q` → (low nibbles, high nibbles) as i32 lanes, the low ones unmasked
/// (a 16-entry lookup ignores the bits above), plus bit i / 16 + i of `qh` (when given) as 16.
#[inline(always)]
unsafe fn nib16(q: *const u8, qh: Option<*const u8>) -> [__m512i; 2] {
    let v = _mm512_cvtepu8_epi32(_mm_loadu_si128(q as *const __m128i));
    let mut w = [v, _mm512_srli_epi32::<4>(v)];
    if let Some(h) = qh {
        let m4 = _mm512_set1_epi32(15);
        let bits = (h as *const u32).read_unaligned();
        let b16 = _mm512_set1_epi32(16);
        w[0] = _mm512_and_si512(w[0], m4);
        w[0] = _mm512_mask_or_epi32(w[0], bits as u16, w[0], b16);
        w[1] = _mm512_mask_or_epi32(w[1], (bits >> 16) as u16, w[1], b16);
    }
    w
}

/// Nibbles looked up in a 16-weight table.
#[inline(always)]
unsafe fn lookup4(u: [__m512i; 2], table: __m512) -> [__m512; 2] {
    [
        _mm512_permutexvar_ps(u[0], table),
        _mm512_permutexvar_ps(u[1], table),
    ]
}

/// 5-bit values looked up in a 32-weight table (two halves).
#[inline(always)]
unsafe fn lookup5(u: [__m512i; 2], t0: __m512, t1: __m512) -> [__m512; 2] {
    [
        _mm512_permutex2var_ps(t0, u[0], t1),
        _mm512_permutex2var_ps(t0, u[1], t1),
    ]
}

impl Dec16 for u::Q4_0 {
    #[inline(always)]
    unsafe fn weights16(p: *const u8) -> [__m512; 2] {
        let d = f16_splat(p);
        let table = table16(0.0, d, _mm512_mul_ps(d, _mm512_set1_ps(-8.0)));
        lookup4(nib16(p.add(2), None), table)
    }
}
impl Dec16 for u::Q4_1 {
    #[inline(always)]
    unsafe fn weights16(p: *const u8) -> [__m512; 2] {
        let (d, m) = f16_pair_splat(p);
        lookup4(nib16(p.add(4), None), table16(0.0, d, m))
    }
}
impl Dec16 for u::Q5_0 {
    #[inline(always)]
    unsafe fn weights16(p: *const u8) -> [__m512; 2] {
        let d = f16_splat(p);
        let off = _mm512_mul_ps(d, _mm512_set1_ps(-16.0));
        let (t0, t1) = (table16(0.0, d, off), table16(16.0, d, off));
        lookup5(nib16(p.add(6), Some(p.add(2))), t0, t1)
    }
}
impl Dec16 for u::Q5_1 {
    #[inline(always)]
    unsafe fn weights16(p: *const u8) -> [__m512; 2] {
        let (d, m) = f16_pair_splat(p);
        let (t0, t1) = (table16(0.0, d, m), table16(16.0, d, m));
        lookup5(nib16(p.add(8), Some(p.add(4))), t0, t1)
    }
}
impl Dec16 for u::Q8_0 {
    #[inline(always)]
    unsafe fn weights16(p: *const u8) -> [__m512; 2] {
        let lo = _mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(2) as *const __m128i));
        let hi = _mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(18) as *const __m128i));
        let d = f16_splat(p);
        [
            _mm512_mul_ps(_mm512_cvtepi32_ps(lo), d),
            _mm512_mul_ps(_mm512_cvtepi32_ps(hi), d),
        ]
    }
}

/// Rows of a 32-weight type at `p`, `rb` bytes apart, decoded in registers; `group` rows per
/// tile (the prefetch distance).
pub struct Direct<C: Dec16> {
    pub p: *const u8,
    pub rb: usize,
    pub group: usize,
    pub _c: PhantomData<C>,
}
impl<C: Dec16> Src for Direct<C> {
    const SIGNED: bool = C::SIGNED;
    #[inline(always)]
    unsafe fn get(&self, r: usize, b: usize) -> (__m256i, [f32; 2], [f32; 2]) {
        let (u, s, o) = C::block(self.p.add(r * self.rb + b * C::BYTES));
        let (s, o) = (_mm256_cvtss_f32(s), _mm_cvtss_f32(o));
        (u, [s, s], [o, o])
    }
    #[inline(always)]
    unsafe fn weights16(&self, r: usize, b: usize) -> [__m512; 2] {
        C::weights16(self.p.add(r * self.rb + b * C::BYTES))
    }
    /// The rows are read interleaved, which the hardware prefetcher follows poorly: fetch the
    /// group two ahead (contiguous bytes) evenly over this group's blocks.
    #[inline(always)]
    unsafe fn prefetch(&self, b: usize) {
        let step = self.group * C::BYTES;
        let ahead = self.p.wrapping_add(2 * self.group * self.rb + b * step);
        let mut o = 0;
        while o < step {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(o) as *const i8);
            o += 64;
        }
    }
}

/// Rows `r0..` of a decoded canonical scratch.
pub struct Canon<'a, const S: bool> {
    pub s: &'a Scratch,
    pub r0: usize,
}
impl<const S: bool> Src for Canon<'_, S> {
    const SIGNED: bool = S;
    #[inline(always)]
    unsafe fn get(&self, r: usize, b: usize) -> (__m256i, [f32; 2], [f32; 2]) {
        let i = (self.r0 + r) * self.s.nb + b;
        let u = _mm256_loadu_si256(self.s.u.as_ptr().add(i * QB) as *const __m256i);
        let (sc, off) = (
            self.s.sc.as_ptr().add(i * 8),
            self.s.off.as_ptr().add(i * 2),
        );
        (u, [*sc, *sc.add(4)], [*off, *off.add(1)])
    }
}

/// Lanes `c·L..` (in half `h`) of one canonical sub-block as f32 weights.
#[inline(always)]
pub(super) unsafe fn weights<V: Vf>(
    blk: (__m256i, [f32; 2], [f32; 2]),
    c: usize,
    h: usize,
    signed: bool,
) -> V {
    let (u, s, o) = blk;
    let q = V::bytes(u, c, signed);
    if signed {
        V::mul(q, V::splat(s[h]))
    } else {
        V::fma(q, V::splat(s[h]), V::splat(o[h]))
    }
}

/// `res[r·J + j]` = row `r` of `src` · activation row `j` of `x` (`[J, nb·32]`, stride `k`).
#[inline(always)]
unsafe fn tile<V: Vf, S: Src, const R: usize, const J: usize>(
    src: &S,
    nb: usize,
    x: *const f32,
    k: usize,
    res: &mut [f32],
) {
    let mut acc = [[V::zero(); J]; R];
    for b in 0..nb {
        src.prefetch(b);
        // Plain loops, not `array::from_fn`: its closure would not inline under our target features.
        let mut w = [[V::zero(); 4]; R];
        for (r, v) in w.iter_mut().enumerate() {
            *v = V::weights(src, r, b);
        }
        for c in 0..QB / V::L {
            for j in 0..J {
                let xv = V::load(x.add(j * k + b * QB + c * V::L));
                for r in 0..R {
                    acc[r][j] = V::fma(w[r][c], xv, acc[r][j]);
                }
            }
        }
    }
    for r in 0..R {
        for j in 0..J {
            res[r * J + j] = acc[r][j].hsum();
        }
    }
}

macro_rules! dispatch {
    ($v:ty, $s:ty, $rf:expr, $nr:expr, $nj:expr, $args:tt) => {
        match ($nr == 1, $nj) {
            (false, 1) => tile::<$v, $s, $rf, 1> $args,
            (false, 2) => tile::<$v, $s, $rf, 2> $args,
            (false, 3) => tile::<$v, $s, $rf, 3> $args,
            (false, 4) => tile::<$v, $s, $rf, 4> $args,
            (true, 1) => tile::<$v, $s, 1, 1> $args,
            (true, 2) => tile::<$v, $s, 1, 2> $args,
            (true, 3) => tile::<$v, $s, 1, 3> $args,
            (true, 4) => tile::<$v, $s, 1, 4> $args,
            _ => unreachable!("f32 tile {}x{}", $nr, $nj),
        }
    };
}

/// Activation rows per tile (`R × J` accumulators plus `R` decoded vectors fit the registers).
pub const TILE_J: usize = 4;

/// Weight rows per full AVX2 tile: 2 × 4 accumulators of its 16 registers.
const AVX2_TILE_R: usize = 2;

/// (weight rows, activation rows) of a full tile for `m` activation rows. On AVX-512 one tile
/// spans all `m ≤ 8` rows, so each weight is decoded once per product; the weight rows shrink as
/// `m` grows (4 × 2, 3 × 4, 2 × m). Measured on SmolLM2, 2 threads: a 4-row pass cost 2.0–2.5×
/// one row with 4 × 4 tiles and 1.6–2.0× with 3 × 4 (register pressure is the likely cause, not
/// checked in the assembly); the 2 × 8 tile of an 8-row pass is still slow (4.4×). Every shape
/// sums each output in the same order, so a row's result does not depend on `m` (verification
/// equals decoding bit for bit).
pub const fn tile_shape(wide: bool, m: usize) -> (usize, usize) {
    match (wide, m) {
        (false, _) => (AVX2_TILE_R, TILE_J),
        (true, 0..=2) => (4, 2),
        (true, 3..=4) => (3, 4),
        (true, _) => (2, 8),
    }
}

/// One tile of `nr` rows (the shape's, or 1 for a tail) × `nj` activation rows (≤ 4 on AVX2).
///
/// # Safety
/// AVX2+FMA+F16C must be present, and AVX-512F when `wide`; `src` must cover `nr` rows of `nb`
/// sub-blocks, `x` `nj` rows of `k ≥ nb·32` floats; `res.len() ≥ nr·nj`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn run<S: Src>(
    wide: bool,
    src: &S,
    nr: usize,
    nb: usize,
    x: *const f32,
    k: usize,
    nj: usize,
    res: &mut [f32],
) {
    if wide {
        run512(src, nr, nb, x, k, nj, res)
    } else {
        run256(src, nr, nb, x, k, nj, res)
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn run512<S: Src>(
    s: &S,
    nr: usize,
    nb: usize,
    x: *const f32,
    k: usize,
    nj: usize,
    r: &mut [f32],
) {
    macro_rules! shapes {
        ($(($r:literal, $j:literal)),*) => {
            match (nr, nj) {
                $(($r, $j) => tile::<V512, S, $r, $j>(s, nb, x, k, r),)*
                _ => unreachable!("f32 tile {nr}x{nj}"),
            }
        };
    }
    shapes!(
        (1, 1),
        (1, 2),
        (1, 3),
        (1, 4),
        (1, 5),
        (1, 6),
        (1, 7),
        (1, 8),
        (4, 1),
        (4, 2),
        (3, 3),
        (3, 4),
        (2, 5),
        (2, 6),
        (2, 7),
        (2, 8)
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn run256<S: Src>(
    s: &S,
    nr: usize,
    nb: usize,
    x: *const f32,
    k: usize,
    nj: usize,
    r: &mut [f32],
) {
    dispatch!(V256, S, 2, nr, nj, (s, nb, x, k, r))
}

/// The first `n` rows of a canonical scratch as f32 weights, `[n, nb·32]` at `out` (the
/// prefill path's tile decode).
#[inline(always)]
unsafe fn canon_f32<V: Vf>(s: &Scratch, n: usize, signed: bool, out: *mut f32) {
    let src = Canon::<false> { s, r0: 0 };
    for i in 0..n * s.nb {
        let blk = src.get(0, i);
        for c in 0..QB / V::L {
            weights::<V>(blk, c, c * V::L / 16, signed).store(out.add(i * QB + c * V::L));
        }
    }
}

/// [`canon_f32`] at the detected width.
///
/// # Safety
/// As [`run`]; `s` must hold `n` decoded rows and `out` room for `n · nb · 32` floats.
pub unsafe fn dequantize(wide: bool, s: &Scratch, n: usize, signed: bool, out: *mut f32) {
    if wide {
        canon512(s, n, signed, out)
    } else {
        canon256(s, n, signed, out)
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn canon512(s: &Scratch, n: usize, signed: bool, out: *mut f32) {
    canon_f32::<V512>(s, n, signed, out)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn canon256(s: &Scratch, n: usize, signed: bool, out: *mut f32) {
    canon_f32::<V256>(s, n, signed, out)
}
