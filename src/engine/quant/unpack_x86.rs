//! AVX2 decoders into the canonical form for the common types (the portable `Format::unpack`
//! loops don't vectorise well and were ~40% of decode time). Same output, bit for bit; the
//! level tests compare against the portable decoders through the scalar kernel.
//!
//! Each function decodes `n` consecutive GGUF blocks from `src` into `u` / `sc` / `off`.

use std::arch::x86_64::*;

#[inline(always)]
unsafe fn f16x2(p: *const u8) -> __m128 {
    // Two f16 (d and m/dmin) in one convert: lanes 0 and 1.
    _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned()))
}

/// 16 bytes of nibbles → 32 bytes: low nibbles first (weights 0-15), then high (16-31).
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let q = _mm_loadu_si128(p as *const __m128i);
    let m4 = _mm_set1_epi8(0x0f);
    _mm256_set_m128i(
        _mm_and_si128(_mm_srli_epi16(q, 4), m4),
        _mm_and_si128(q, m4),
    )
}

/// Bit i of the 32-bit `qh` → 0x10 in byte i (the fifth bit of Q5_0/Q5_1).
#[inline(always)]
unsafe fn fifth_bits(p: *const u8) -> __m256i {
    let qh = _mm256_set1_epi32((p as *const i32).read_unaligned());
    // Byte i takes byte i/8 of qh, then tests bit i%8 of it.
    let spread = _mm256_shuffle_epi8(
        qh,
        _mm256_set_epi64x(
            0x0303030303030303,
            0x0202020202020202,
            0x0101010101010101,
            0,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040201008040201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// One 32-weight block decoded into registers: `u`, the 8 lane scales, the offset (lane 0).
/// The small-`m` kernels consume this directly; `rows` stores it into the scratch.
pub trait Dec {
    const BYTES: usize;
    const SIGNED: bool = false;
    unsafe fn block(p: *const u8) -> (__m256i, __m256, __m128);
}

#[inline(always)]
unsafe fn f16x1(p: *const u8) -> __m128 {
    _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const u16).read_unaligned() as i32))
}

pub struct Q4_0;
impl Dec for Q4_0 {
    const BYTES: usize = 18;
    #[inline(always)]
    unsafe fn block(p: *const u8) -> (__m256i, __m256, __m128) {
        let d = f16x1(p);
        (
            nibbles(p.add(2)),
            _mm256_broadcastss_ps(d),
            _mm_mul_ps(d, _mm_set1_ps(-8.0)),
        )
    }
}

pub struct Q4_1;
impl Dec for Q4_1 {
    const BYTES: usize = 20;
    #[inline(always)]
    unsafe fn block(p: *const u8) -> (__m256i, __m256, __m128) {
        let dm = f16x2(p);
        (
            nibbles(p.add(4)),
            _mm256_broadcastss_ps(dm),
            _mm_movehdup_ps(dm),
        )
    }
}

pub struct Q5_0;
impl Dec for Q5_0 {
    const BYTES: usize = 22;
    #[inline(always)]
    unsafe fn block(p: *const u8) -> (__m256i, __m256, __m128) {
        let d = f16x1(p);
        let u = _mm256_or_si256(nibbles(p.add(6)), fifth_bits(p.add(2)));
        (
            u,
            _mm256_broadcastss_ps(d),
            _mm_mul_ps(d, _mm_set1_ps(-16.0)),
        )
    }
}

pub struct Q5_1;
impl Dec for Q5_1 {
    const BYTES: usize = 24;
    #[inline(always)]
    unsafe fn block(p: *const u8) -> (__m256i, __m256, __m128) {
        let dm = f16x2(p);
        let u = _mm256_or_si256(nibbles(p.add(8)), fifth_bits(p.add(4)));
        (u, _mm256_broadcastss_ps(dm), _mm_movehdup_ps(dm))
    }
}

pub struct Q8_0;
impl Dec for Q8_0 {
    const BYTES: usize = 34;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn block(p: *const u8) -> (__m256i, __m256, __m128) {
        let q = _mm256_loadu_si256(p.add(2) as *const __m256i);
        (q, _mm256_broadcastss_ps(f16x1(p)), _mm_setzero_ps())
    }
}

/// Decodes `n` blocks of a 32-weight type into the scratch arrays.
#[inline(always)]
pub unsafe fn rows<D: Dec>(src: *const u8, n: usize, u: *mut u8, sc: *mut f32, off: *mut f32) {
    for b in 0..n {
        let (q, s, o) = D::block(src.add(D::BYTES * b));
        _mm256_storeu_si256(u.add(32 * b) as *mut __m256i, q);
        _mm256_storeu_ps(sc.add(8 * b), s);
        _mm_storel_epi64(
            off.add(2 * b) as *mut __m128i,
            _mm_castps_si128(_mm_shuffle_ps(o, o, 0)),
        );
    }
}

/// The 8 (scale, min) pairs of a Q4K/Q5K block as `d·scale` and `-dmin·min`.
#[inline(always)]
unsafe fn k4_scales(p: *const u8, sc: *mut f32, off: *mut f32) {
    let dm = f16x2(p);
    let (d, dmin) = (_mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)));
    let q = std::slice::from_raw_parts(p.add(4), 12);
    for j in 0..8 {
        let (s, m) = if j < 4 {
            (q[j] & 63, q[j + 4] & 63)
        } else {
            (
                (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
                (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
            )
        };
        _mm256_storeu_ps(sc.add(8 * j), _mm256_set1_ps(d * s as f32));
        let o = -dmin * m as f32;
        *off.add(2 * j) = o;
        *off.add(2 * j + 1) = o;
    }
}

#[inline(always)]
pub unsafe fn q4k(src: *const u8, n: usize, u: *mut u8, sc: *mut f32, off: *mut f32) {
    let m4 = _mm256_set1_epi8(0x0f);
    for b in 0..n {
        let p = src.add(144 * b);
        let ub = u.add(256 * b);
        for c in 0..4 {
            let q = _mm256_loadu_si256(p.add(16 + 32 * c) as *const __m256i);
            _mm256_storeu_si256(ub.add(64 * c) as *mut __m256i, _mm256_and_si256(q, m4));
            _mm256_storeu_si256(
                ub.add(64 * c + 32) as *mut __m256i,
                _mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
            );
        }
        k4_scales(p, sc.add(64 * b), off.add(16 * b));
    }
}

#[inline(always)]
pub unsafe fn q5k(src: *const u8, n: usize, u: *mut u8, sc: *mut f32, off: *mut f32) {
    let m4 = _mm256_set1_epi8(0x0f);
    let b5 = _mm256_set1_epi8(0x10);
    for b in 0..n {
        let p = src.add(176 * b);
        let qh = _mm256_loadu_si256(p.add(16) as *const __m256i);
        let ub = u.add(256 * b);
        for c in 0..4 {
            let q = _mm256_loadu_si256(p.add(48 + 32 * c) as *const __m256i);
            // Bit 2c (low nibbles) and 2c+1 (high nibbles) of qh[i] → 0x10.
            let (bl, bh) = (
                _mm256_set1_epi8(1 << (2 * c)),
                _mm256_set1_epi8(1 << (2 * c + 1)),
            );
            let hl = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, bl), bl), b5);
            let hh = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, bh), bh), b5);
            _mm256_storeu_si256(
                ub.add(64 * c) as *mut __m256i,
                _mm256_or_si256(_mm256_and_si256(q, m4), hl),
            );
            let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            _mm256_storeu_si256(ub.add(64 * c + 32) as *mut __m256i, _mm256_or_si256(hi, hh));
        }
        k4_scales(p, sc.add(64 * b), off.add(16 * b));
    }
}

#[inline(always)]
pub unsafe fn q6k(src: *const u8, n: usize, u: *mut u8, sc: *mut f32, off: *mut f32) {
    let m4 = _mm256_set1_epi8(0x0f);
    let m30 = _mm256_set1_epi8(0x30);
    for b in 0..n {
        let p = src.add(210 * b);
        let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
            (p.add(208) as *const u16).read_unaligned() as i32,
        )));
        let ub = u.add(256 * b);
        for h in 0..2 {
            let l0 = _mm256_loadu_si256(p.add(64 * h) as *const __m256i);
            let l1 = _mm256_loadu_si256(p.add(64 * h + 32) as *const __m256i);
            let qh = _mm256_loadu_si256(p.add(128 + 32 * h) as *const __m256i);
            // The 2-bit fields of qh, moved to bits 4-5 (16-bit shifts; the mask drops spill-over).
            let h0 = _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30);
            let h1 = _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30);
            let h2 = _mm256_and_si256(qh, m30);
            let h3 = _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30);
            let o = ub.add(128 * h);
            _mm256_storeu_si256(
                o as *mut __m256i,
                _mm256_or_si256(_mm256_and_si256(l0, m4), h0),
            );
            _mm256_storeu_si256(
                o.add(32) as *mut __m256i,
                _mm256_or_si256(_mm256_and_si256(l1, m4), h1),
            );
            let l0h = _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4);
            let l1h = _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4);
            _mm256_storeu_si256(o.add(64) as *mut __m256i, _mm256_or_si256(l0h, h2));
            _mm256_storeu_si256(o.add(96) as *mut __m256i, _mm256_or_si256(l1h, h3));
        }
        // Sub-block s = 4h + t has the 16-weight scales 2s and 2s+1.
        for s in 0..8 {
            let d0 = d * (*p.add(192 + 2 * s) as i8) as f32;
            let d1 = d * (*p.add(192 + 2 * s + 1) as i8) as f32;
            _mm256_storeu_ps(
                sc.add(64 * b + 8 * s),
                _mm256_set_m128(_mm_set1_ps(d1), _mm_set1_ps(d0)),
            );
            *off.add(16 * b + 2 * s) = -32.0 * d0;
            *off.add(16 * b + 2 * s + 1) = -32.0 * d1;
        }
    }
}
