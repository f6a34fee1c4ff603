//! The f32 vector widths of the f32-activation kernels (`fdot`): AVX2's 8 lanes and AVX-512's
//! 16, only the operations the tiles need, so that one tile body serves both.

use super::fdot::Src;
use std::arch::x86_64::*;

/// One f32 vector width (AVX2: 8 lanes, AVX-512: 16), only what the tile needs.
pub trait Vf: Copy {
    const L: usize;
    unsafe fn zero() -> Self;
    unsafe fn splat(v: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// Bytes `c·L..(c+1)·L` of `u` as f32 (signed or unsigned bytes).
    unsafe fn bytes(u: __m256i, c: usize, signed: bool) -> Self;
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
    unsafe fn mul(a: Self, b: Self) -> Self;
    unsafe fn hsum(self) -> f32;
    /// Row `r`, sub-block `b` of `src` as `QB / L` vectors of f32 weights.
    unsafe fn weights<S: Src>(src: &S, r: usize, b: usize) -> [Self; 4];
}

#[derive(Clone, Copy)]
pub struct V256(__m256);
impl Vf for V256 {
    const L: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> Self {
        V256(_mm256_setzero_ps())
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        V256(_mm256_set1_ps(v))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        V256(_mm256_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm256_storeu_ps(p, self.0)
    }
    #[inline(always)]
    unsafe fn bytes(u: __m256i, c: usize, signed: bool) -> Self {
        let h = if c < 2 {
            _mm256_castsi256_si128(u)
        } else {
            _mm256_extracti128_si256::<1>(u)
        };
        let q = if c % 2 == 1 {
            _mm_srli_si128::<8>(h)
        } else {
            h
        };
        let i = if signed {
            _mm256_cvtepi8_epi32(q)
        } else {
            _mm256_cvtepu8_epi32(q)
        };
        V256(_mm256_cvtepi32_ps(i))
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        V256(_mm256_fmadd_ps(a.0, b.0, c.0))
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        V256(_mm256_mul_ps(a.0, b.0))
    }
    #[inline(always)]
    unsafe fn hsum(self) -> f32 {
        super::kernel::x86::hsum(self.0)
    }
    #[inline(always)]
    unsafe fn weights<S: Src>(src: &S, r: usize, b: usize) -> [Self; 4] {
        let blk = src.get(r, b);
        let mut w = [Self::zero(); 4];
        for (c, v) in w.iter_mut().enumerate() {
            *v = super::fdot::weights::<Self>(blk, c, c * Self::L / 16, S::SIGNED);
        }
        w
    }
}

#[derive(Clone, Copy)]
pub struct V512(pub(super) __m512);
impl Vf for V512 {
    const L: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> Self {
        V512(_mm512_setzero_ps())
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        V512(_mm512_set1_ps(v))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        V512(_mm512_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm512_storeu_ps(p, self.0)
    }
    #[inline(always)]
    unsafe fn bytes(u: __m256i, c: usize, signed: bool) -> Self {
        let h = if c == 0 {
            _mm256_castsi256_si128(u)
        } else {
            _mm256_extracti128_si256::<1>(u)
        };
        let i = if signed {
            _mm512_cvtepi8_epi32(h)
        } else {
            _mm512_cvtepu8_epi32(h)
        };
        V512(_mm512_cvtepi32_ps(i))
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        V512(_mm512_fmadd_ps(a.0, b.0, c.0))
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        V512(_mm512_mul_ps(a.0, b.0))
    }
    #[inline(always)]
    unsafe fn hsum(self) -> f32 {
        _mm512_reduce_add_ps(self.0)
    }
    #[inline(always)]
    unsafe fn weights<S: Src>(src: &S, r: usize, b: usize) -> [Self; 4] {
        let [lo, hi] = src.weights16(r, b);
        [V512(lo), V512(hi), Self::zero(), Self::zero()]
    }
}
