//! GGUF block layouts, decoded into one canonical form that every kernel consumes.
//!
//! Canonical form, per 32 weights ("sub-block"): 32 bytes `u` (unsigned, or signed i8 bits for
//! the [`Format::SIGNED`] types), 8 f32 lane scales and 2 f32 offsets, with
//! `w[i] = scale[i / 4] * u[i] + off[i / 16]`. Eight lane scales because an i32 lane of the
//! integer dot (maddubs+madd or dpbusd) sums 4 consecutive bytes, so lanes 0-3 cover weights 0-15
//! and lanes 4-7 cover 16-31: the 16-weight scales of Q2K/Q3K/Q6K then fit as well as the
//! 32-weight ones. The offset folds the `-8`, `-16`, `-32` of the symmetric types and the `m`/`min`
//! of the asymmetric ones into one term `off · Σa` that the activation block sums pay for.
//! Decoding once into this form keeps the hot integer loop identical for all types.

use candle_core::quantized::GgmlDType;

/// Weights per canonical sub-block, and per activation block.
pub const QB: usize = 32;

/// f16 bits to f32 without a library call (hot in the unpackers: one or two per block).
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let exp = (h >> 10) & 0x1f;
    let man = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        // Zero or subnormal: man · 2^-24, exact in f32.
        let v = man as f32 * (1.0 / 16_777_216.0);
        return if sign != 0 { -v } else { v };
    } else if exp == 0x1f {
        sign | 0x7f80_0000 | (man << 13)
    } else {
        sign | (((exp as u32) + 112) << 23) | (man << 13)
    };
    f32::from_bits(bits)
}

#[inline(always)]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// One GGUF block type decoded into canonical sub-blocks.
pub trait Format {
    /// Which GGUF type this is (lets the SIMD levels pick their own decoder).
    const ID: GgmlDType;
    /// Bytes of one GGUF block.
    const BYTES: usize;
    /// Weights of one GGUF block (32, or 256 for K-quants).
    const WEIGHTS: usize;
    /// `u` holds i8 weights (Q8_0): the kernels use the sign trick, offsets are zero.
    const SIGNED: bool = false;
    /// Decodes `src` (`BYTES` long) into `WEIGHTS` bytes of `u`, `WEIGHTS / 4` scales and
    /// `WEIGHTS / 16` offsets.
    fn unpack(src: &[u8], u: &mut [u8], sc: &mut [f32], off: &mut [f32]);
}

/// Writes the scales and offsets of one sub-block whose two halves share them.
#[inline(always)]
fn flat(sc: &mut [f32], off: &mut [f32], d: f32, o: f32) {
    sc[..8].fill(d);
    off[..2].fill(o);
}

/// Halves with their own scale and offset (16-weight scales).
#[inline(always)]
fn halves(sc: &mut [f32], off: &mut [f32], d: [f32; 2], o: [f32; 2]) {
    sc[..4].fill(d[0]);
    sc[4..8].fill(d[1]);
    off[0] = o[0];
    off[1] = o[1];
}

/// Low nibbles are weights 0-15, high nibbles 16-31 (the 32-block quants).
#[inline(always)]
fn nibbles(qs: &[u8], u: &mut [u8]) {
    let (lo, hi) = u[..32].split_at_mut(16);
    for i in 0..16 {
        lo[i] = qs[i] & 0x0f;
        hi[i] = qs[i] >> 4;
    }
}

/// Adds bit `i` of `qh` as bit 4 of weight `i` (Q5_0/Q5_1).
#[inline(always)]
fn fifth_bits(qh: u32, u: &mut [u8]) {
    for (i, v) in u[..32].iter_mut().enumerate() {
        *v |= (((qh >> i) & 1) << 4) as u8;
    }
}

pub struct Q4_0;
impl Format for Q4_0 {
    const ID: GgmlDType = GgmlDType::Q4_0;
    const BYTES: usize = 18;
    const WEIGHTS: usize = 32;
    #[inline(always)]
    fn unpack(src: &[u8], u: &mut [u8], sc: &mut [f32], off: &mut [f32]) {
        let d = f16_at(src, 0);
        nibbles(&src[2..18], u);
        flat(sc, off, d, -8.0 * d);
    }
}

pub struct Q4_1;
impl Format for Q4_1 {
    const ID: GgmlDType = GgmlDType::Q4_1;
    const BYTES: usize = 20;
    const WEIGHTS: usize = 32;
    #[inline(always)]
    fn unpack(src: &[u8], u: &mut [u8], sc: &mut [f32], off: &mut [f32]) {
        nibbles(&src[4..20], u);
        flat(sc, off, f16_at(src, 0), f16_at(src, 2));
    }
}

pub struct Q5_0;
impl Format for Q5_0 {
    const ID: GgmlDType = GgmlDType::Q5_0;
    const BYTES: usize = 22;
    const WEIGHTS: usize = 32;
    #[inline(always)]
    fn unpack(src: &[u8], u: &mut [u8], sc: &mut [f32], off: &mut [f32]) {
        let d = f16_at(src, 0);
        nibbles(&src[6..22], u);
        fifth_bits(u32::from_le_bytes([src[2], src[3], src[4], src[5]]), u);
        flat(sc, off, d, -16.0 * d);
    }
}

pub struct Q5_1;
impl Format for Q5_1 {
    const ID: GgmlDType = GgmlDType::Q5_1;
    const BYTES: usize = 24;
    const WEIGHTS: usize = 32;
    #[inline(always)]
    fn unpack(src: &[u8], u: &mut [u8], sc: &mut [f32], off: &mut [f32]) {
        nibbles(&src[8..24], u);
        fifth_bits(u32::from_le_bytes([src[4], src[5], src[6], src[7]]), u);
        flat(sc, off, f16_at(src, 0), f16_at(src, 2));
    }
}

pub struct Q8_0;
impl Format for Q8_0 {
    const ID: GgmlDType = GgmlDType::Q8_0;
    const BYTES: usize = 34;
    const WEIGHTS: usize = 32;
    const SIGNED: bool = true;
    #[inline(always)]
    fn unpack(src: &[u8], u: &mut [u8], sc: &mut [f32], off: &mut [f32]) {
        u[..32].copy_from_slice(&src[2..34]);
        flat(sc, off, f16_at(src, 0), 0.0);
    }
}

/// The 6-bit scale and min `j` (0..8) of Q4K/Q5K, packed in 12 bytes.
#[inline(always)]
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    let (s, m) = if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    };
    (s as f32, m as f32)
}

pub struct Q4K;
impl Format for Q4K {
    const ID: GgmlDType = GgmlDType::Q4K;
    const BYTES: usize = 144;
    const WEIGHTS: usize = 256;
    #[inline(always)]
    fn unpack(src: &[u8], u: &mut [u8], sc: &mut [f32], off: &mut [f32]) {
        let (d, dmin) = (f16_at(src, 0), f16_at(src, 2));
        let scales = &src[4..16];
        let qs = &src[16..144];
        // Chunk c of 64 weights: 32 bytes, low nibbles then high nibbles, own scale each.
        for c in 0..4 {
            let q = &qs[32 * c..32 * c + 32];
            for i in 0..32 {
                u[64 * c + i] = q[i] & 0x0f;
                u[64 * c + 32 + i] = q[i] >> 4;
            }
            for h in 0..2 {
                let s = 2 * c + h;
                let (a, m) = scale_min_k4(s, scales);
                flat(&mut sc[8 * s..], &mut off[2 * s..], d * a, -dmin * m);
            }
        }
    }
}

pub struct Q5K;
impl Format for Q5K {
    const ID: GgmlDType = GgmlDType::Q5K;
    const BYTES: usize = 176;
    const WEIGHTS: usize = 256;
    #[inline(always)]
    fn unpack(src: &[u8], u: &mut [u8], sc: &mut [f32], off: &mut [f32]) {
        let (d, dmin) = (f16_at(src, 0), f16_at(src, 2));
        let scales = &src[4..16];
        let qh = &src[16..48];
        let qs = &src[48..176];
        for c in 0..4 {
            let q = &qs[32 * c..32 * c + 32];
            for i in 0..32 {
                u[64 * c + i] = (q[i] & 0x0f) | (((qh[i] >> (2 * c)) & 1) << 4);
                u[64 * c + 32 + i] = (q[i] >> 4) | (((qh[i] >> (2 * c + 1)) & 1) << 4);
            }
            for h in 0..2 {
                let s = 2 * c + h;
                let (a, m) = scale_min_k4(s, scales);
                flat(&mut sc[8 * s..], &mut off[2 * s..], d * a, -dmin * m);
            }
        }
    }
}

pub struct Q6K;
impl Format for Q6K {
    const ID: GgmlDType = GgmlDType::Q6K;
    const BYTES: usize = 210;
    const WEIGHTS: usize = 256;
    #[inline(always)]
    fn unpack(src: &[u8], u: &mut [u8], sc: &mut [f32], off: &mut [f32]) {
        let (ql, qh) = (&src[0..128], &src[128..192]);
        let scales = &src[192..208];
        let d = f16_at(src, 208);
        // Half n of 128 weights = 4 sub-blocks t: ql nibbles give the low 4 bits, a 2-bit field
        // of qh the high 2. Stored unsigned (0..63); the -32 moves into the offset.
        for n in 0..2 {
            let (l, h) = (&ql[64 * n..64 * n + 64], &qh[32 * n..32 * n + 32]);
            let base = 128 * n;
            for i in 0..32 {
                u[base + i] = (l[i] & 0x0f) | ((h[i] & 3) << 4);
                u[base + 32 + i] = (l[i + 32] & 0x0f) | (((h[i] >> 2) & 3) << 4);
                u[base + 64 + i] = (l[i] >> 4) | (((h[i] >> 4) & 3) << 4);
                u[base + 96 + i] = (l[i + 32] >> 4) | (((h[i] >> 6) & 3) << 4);
            }
            for t in 0..4 {
                let s = 4 * n + t;
                let dl = [0, 1].map(|k| d * (scales[8 * n + 2 * t + k] as i8) as f32);
                halves(
                    &mut sc[8 * s..],
                    &mut off[2 * s..],
                    dl,
                    dl.map(|v| -32.0 * v),
                );
            }
        }
    }
}

pub struct Q2K;
impl Format for Q2K {
    const ID: GgmlDType = GgmlDType::Q2K;
    const BYTES: usize = 84;
    const WEIGHTS: usize = 256;
    #[inline(always)]
    fn unpack(src: &[u8], u: &mut [u8], sc: &mut [f32], off: &mut [f32]) {
        let (scales, qs) = (&src[0..16], &src[16..80]);
        let (d, dmin) = (f16_at(src, 80), f16_at(src, 82));
        // Weight 128n + 32j + l is bits 2j..2j+2 of qs[32n + l]; one scale/min byte per 16.
        for n in 0..2 {
            for j in 0..4 {
                let s = 4 * n + j;
                for l in 0..32 {
                    u[32 * s + l] = (qs[32 * n + l] >> (2 * j)) & 3;
                }
                let b = [scales[2 * s], scales[2 * s + 1]];
                let dl = b.map(|v| d * (v & 0x0f) as f32);
                let ml = b.map(|v| -dmin * (v >> 4) as f32);
                halves(&mut sc[8 * s..], &mut off[2 * s..], dl, ml);
            }
        }
    }
}

pub struct Q3K;
impl Format for Q3K {
    const ID: GgmlDType = GgmlDType::Q3K;
    const BYTES: usize = 110;
    const WEIGHTS: usize = 256;
    #[inline(always)]
    fn unpack(src: &[u8], u: &mut [u8], sc: &mut [f32], off: &mut [f32]) {
        let (hmask, qs, scales) = (&src[0..32], &src[32..96], &src[96..108]);
        let d = f16_at(src, 108);
        // 16 six-bit scales (biased by 32): low 4 bits from bytes 0-7, high 2 from bytes 8-11.
        let scale = |j: usize| {
            let lo = (scales[j % 8] >> (4 * (j / 8))) & 0x0f;
            let hi = (scales[8 + j % 4] >> (2 * (j / 4))) & 3;
            d * ((lo | (hi << 4)) as i32 - 32) as f32
        };
        // Weight 128n + 32j + l: 2 bits of qs[32n + l], plus bit 4n+j of hmask[l] as the third
        // bit (set = no -4). Stored unsigned 0..7; the -4 moves into the offset.
        for n in 0..2 {
            for j in 0..4 {
                let s = 4 * n + j;
                for l in 0..32 {
                    let lo = (qs[32 * n + l] >> (2 * j)) & 3;
                    let hi = (hmask[l] >> s) & 1;
                    u[32 * s + l] = lo | (hi << 2);
                }
                let dl = [scale(2 * s), scale(2 * s + 1)];
                halves(
                    &mut sc[8 * s..],
                    &mut off[2 * s..],
                    dl,
                    dl.map(|v| -4.0 * v),
                );
            }
        }
    }
}

/// Decodes a whole row of `F` blocks to f32 via the canonical form (the reference decoding:
/// the kernels' integer dot reproduces exactly these values).
pub fn dequantize_row<F: Format>(src: &[u8], out: &mut [f32]) {
    let (mut u, mut sc, mut off) = (
        vec![0u8; F::WEIGHTS],
        vec![0f32; F::WEIGHTS / 4],
        vec![0f32; F::WEIGHTS / 16],
    );
    for (blk, y) in src
        .chunks_exact(F::BYTES)
        .zip(out.chunks_exact_mut(F::WEIGHTS))
    {
        F::unpack(blk, &mut u, &mut sc, &mut off);
        for (i, v) in y.iter_mut().enumerate() {
            let q = if F::SIGNED {
                u[i] as i8 as f32
            } else {
                u[i] as f32
            };
            *v = sc[i / 4] * q + off[i / 16];
        }
    }
}

/// Decodes one row of any weight dtype to f32 (the reference decoding).
pub fn decode_row(dtype: GgmlDType, src: &[u8], out: &mut [f32]) {
    match dtype {
        GgmlDType::Q4_0 => dequantize_row::<Q4_0>(src, out),
        GgmlDType::Q4_1 => dequantize_row::<Q4_1>(src, out),
        GgmlDType::Q5_0 => dequantize_row::<Q5_0>(src, out),
        GgmlDType::Q5_1 => dequantize_row::<Q5_1>(src, out),
        GgmlDType::Q8_0 => dequantize_row::<Q8_0>(src, out),
        GgmlDType::Q2K => dequantize_row::<Q2K>(src, out),
        GgmlDType::Q3K => dequantize_row::<Q3K>(src, out),
        GgmlDType::Q4K => dequantize_row::<Q4K>(src, out),
        GgmlDType::Q5K => dequantize_row::<Q5K>(src, out),
        GgmlDType::Q6K => dequantize_row::<Q6K>(src, out),
        dt => super::float::decode_row(dt, src, out),
    }
}
