//! The generic path: each row is decoded into a per-thread f32 buffer and dotted (FMA) with
//! every activation row while it is hot. Used for F32, F16 and BF16 weights (rare in GGUF
//! linears: norms, sometimes an unquantized head, so no integer kernel) and, with the reference
//! decoder, as the scalar level of the f32-activation path for every type.

use super::formats::f16_to_f32;
use candle_core::quantized::GgmlDType;

/// Decodes one row of a float dtype.
pub fn decode_row(dtype: GgmlDType, src: &[u8], out: &mut [f32]) {
    match dtype {
        GgmlDType::F32 => {
            for (o, b) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlDType::F16 => {
            for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
            }
        }
        GgmlDType::BF16 => {
            for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
            }
        }
        other => unreachable!("not a float dtype: {other:?}"),
    }
}

/// `x[j] · row` for every activation row `j` (`x` is `[m, k]`), written to `res[j]`.
#[inline(always)]
fn dots_portable(x: &[f32], m: usize, row: &[f32], res: &mut [f32]) {
    let k = row.len();
    for j in 0..m {
        let xs = &x[j * k..(j + 1) * k];
        let mut lanes = [0f32; 8];
        let (ca, cb) = (xs.chunks_exact(8), row.chunks_exact(8));
        let tail: f32 = ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(a, b)| a * b)
            .sum();
        for (a, b) in ca.zip(cb) {
            for l in 0..8 {
                lanes[l] = a[l].mul_add(b[l], lanes[l]);
            }
        }
        res[j] = lanes.iter().sum::<f32>() + tail;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_avx2<D: Fn(&[u8], &mut [f32])>(
    decode: D,
    src: &[u8],
    row_bytes: usize,
    x: &[f32],
    m: usize,
    buf: &mut [f32],
    res: &mut [f32],
) {
    for (r, raw) in src.chunks_exact(row_bytes).enumerate() {
        decode(raw, buf);
        dots_portable(x, m, buf, &mut res[r * m..(r + 1) * m]);
    }
}

/// `res[r·m + j] = row r of src · x[j]`, for the rows in `src` (`decode` turns one row's bytes
/// into f32); `simd` picks the AVX2+FMA build.
#[allow(clippy::too_many_arguments)]
pub fn rows<D: Fn(&[u8], &mut [f32])>(
    decode: D,
    src: &[u8],
    row_bytes: usize,
    x: &[f32],
    m: usize,
    cols: usize,
    simd: bool,
    res: &mut [f32],
) {
    let mut buf = vec![0f32; cols];
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: the caller only sets `simd` when AVX2, FMA and F16C were detected.
        return unsafe { rows_avx2(decode, src, row_bytes, x, m, &mut buf, res) };
    }
    let _ = simd;
    for (r, raw) in src.chunks_exact(row_bytes).enumerate() {
        decode(raw, &mut buf);
        dots_portable(x, m, &buf, &mut res[r * m..(r + 1) * m]);
    }
}
