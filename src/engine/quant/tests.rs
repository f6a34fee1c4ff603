//! Parity with candle's quantizers/dequantizers, per type and per dispatch level.

use super::f32path::FLevel;
use super::*;
use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};

const ALL: [GgmlDType; 13] = [
    GgmlDType::F32,
    GgmlDType::F16,
    GgmlDType::BF16,
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q8_0,
    GgmlDType::Q2K,
    GgmlDType::Q3K,
    GgmlDType::Q4K,
    GgmlDType::Q5K,
    GgmlDType::Q6K,
];

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    // Uneven magnitudes across blocks, like real weights and activations.
    (0..n)
        .map(|i| rng.random_range(-1.0f32..1.0) * (1.0 + (i / 32 % 5) as f32))
        .collect()
}

/// A random `[rows, cols]` matrix quantized by candle, and candle's dequantization of it.
fn quantized(dtype: GgmlDType, rows: usize, cols: usize, seed: u64) -> (QMatrix, Vec<f32>) {
    let t = Tensor::from_vec(random(rows * cols, seed), (rows, cols), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&t, dtype).unwrap();
    let bytes = q.data().unwrap().to_vec();
    let deq = q
        .dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    (QMatrix::new(dtype, rows, cols, bytes).unwrap(), deq)
}

fn is_float(dt: GgmlDType) -> bool {
    matches!(dt, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
}

fn f32_levels() -> Vec<FLevel> {
    let mut v = vec![FLevel::Scalar];
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") && has!("f16c") {
            v.push(FLevel::Avx2);
            if has!("avx512f") {
                v.push(FLevel::Avx512);
            }
        }
    }
    v
}

/// `x · Wᵀ` against candle's dequantized weights times the f32 activations, at every level
/// (exact up to f32 summation order: 1e-5 of Σ|w x|), and every SIMD level against scalar.
#[test]
fn matmul_t_is_the_f32_product_of_the_dequantized_weights() {
    for dt in ALL {
        let cols = if dt.block_size() == 256 { 512 } else { 576 };
        let rows = 37; // not a multiple of the tile heights: exercises the ragged tail
        let (w, wf) = quantized(dt, rows, cols, 5);
        for m in [1usize, 2, 5, 9, 33, 128] {
            let x = random(m * cols, 13 + m as u64);
            let scalar = w.matmul_f32(&x, m, FLevel::Scalar);
            for level in f32_levels() {
                let got = w.matmul_f32(&x, m, level);
                for i in 0..m {
                    let xs = &x[i * cols..(i + 1) * cols];
                    for r in 0..rows {
                        let ws = &wf[r * cols..(r + 1) * cols];
                        let want: f64 = ws.iter().zip(xs).map(|(a, b)| *a as f64 * *b as f64).sum();
                        let mag: f64 = ws
                            .iter()
                            .zip(xs)
                            .map(|(a, b)| (*a as f64 * *b as f64).abs())
                            .sum();
                        let (g, s) = (got[i * rows + r] as f64, scalar[i * rows + r] as f64);
                        let tol = 1e-5 * mag + 1e-5;
                        assert!(
                            (g - want).abs() <= tol && (g - s).abs() <= tol,
                            "{dt:?} {level:?} m={m} [{i},{r}]: {g} vs {want} (scalar {s}, tol {tol})"
                        );
                    }
                }
            }
        }
    }
    assert_eq!(FLevel::detect(), *f32_levels().last().unwrap());
}

/// Lossless speculation rests on this: a row's product is the same bits whether it is decoded
/// alone (m = 1) or verified with others — up to `SMALL_M` in one tile, beyond it in chunks
/// (here up to three) — at every level and tile shape.
#[test]
fn a_rows_product_does_not_depend_on_the_rows_beside_it() {
    for dt in ALL {
        let cols = if dt.block_size() == 256 { 512 } else { 576 };
        let rows = 37;
        let (w, _) = quantized(dt, rows, cols, 7);
        for m in 2..=2 * super::f32path::SMALL_M + 1 {
            let x = random(m * cols, 50 + m as u64);
            for level in f32_levels() {
                let together = w.matmul_f32(&x, m, level);
                for i in 0..m {
                    let alone = w.matmul_f32(&x[i * cols..(i + 1) * cols], 1, level);
                    assert!(
                        alone
                            .iter()
                            .zip(&together[i * rows..(i + 1) * rows])
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{dt:?} {level:?}: row {i} of {m} differs from the row alone"
                    );
                }
            }
        }
    }
}

fn levels() -> Vec<Level> {
    let mut v = vec![Level::Scalar];
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") && has!("f16c") {
            v.push(Level::Avx2);
            if has!("avx512f") && has!("avx512vl") && has!("avx512vnni") {
                v.push(Level::Vnni);
            }
        }
    }
    v
}

#[test]
fn dequantize_matches_candle_for_every_type() {
    for dt in ALL {
        let cols = if dt.block_size() == 256 { 512 } else { 576 };
        let (w, want) = quantized(dt, 7, cols, 1);
        let got = w.dequantize();
        for (i, (g, e)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - e).abs() <= 1e-5 * (1.0 + e.abs()),
                "{dt:?} [{i}]: {g} vs {e}"
            );
        }
        let mut row = vec![0f32; cols];
        w.dequantize_row(3, &mut row);
        assert_eq!(row, got[3 * cols..4 * cols], "{dt:?}");
    }
}

/// Against candle's dequantized weights times the f32 activations. Bound: rounding each
/// activation to its block's 8-bit grid errs by at most d/2 (d = block max / 127), so
/// |error| ≤ Σ_k |w_k| · d_k / 2, plus 1e-4 of Σ|w_k x_k| for f32 accumulation order.
#[test]
fn int8_matmul_matches_the_dequantized_product_for_every_type_and_row_count() {
    for dt in ALL {
        let col_set: &[usize] = if dt.block_size() == 256 {
            &[256, 1536]
        } else {
            &[576, 1536]
        };
        for &cols in col_set {
            let rows = 37; // not a multiple of the tile height: exercises the ragged tail
            let (w, wf) = quantized(dt, rows, cols, cols as u64);
            for m in [1usize, 2, 5, 9, 33, 128] {
                let x = random(m * cols, 7 + m as u64);
                let got = w.matmul_t_int8(&x, m);
                for i in 0..m {
                    let xs = &x[i * cols..(i + 1) * cols];
                    let d: Vec<f32> = xs
                        .chunks(32)
                        .map(|b| b.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0)
                        .collect();
                    for r in 0..rows {
                        let ws = &wf[r * cols..(r + 1) * cols];
                        let want: f64 = ws.iter().zip(xs).map(|(a, b)| *a as f64 * *b as f64).sum();
                        let mag: f32 = ws.iter().zip(xs).map(|(a, b)| (a * b).abs()).sum();
                        let quant: f32 = if is_float(dt) {
                            0.0
                        } else {
                            ws.iter()
                                .enumerate()
                                .map(|(k, a)| a.abs() * d[k / 32] / 2.0)
                                .sum()
                        };
                        let tol = 1.001 * quant + 1e-4 * mag + 1e-5;
                        let g = got[i * rows + r];
                        assert!(
                            (g as f64 - want).abs() <= tol as f64,
                            "{dt:?} cols={cols} m={m} [{i},{r}]: {g} vs {want} (tol {tol})"
                        );
                    }
                }
            }
        }
    }
}

/// Every SIMD level against the scalar one, and the scalar one against the exact product of the
/// quantized activations (only f32 summation order differs: 1e-5 of Σ|w x|).
#[test]
fn every_int8_level_matches_scalar() {
    for dt in ALL {
        let cols = if dt.block_size() == 256 { 512 } else { 576 };
        let rows = 41;
        let (w, wf) = quantized(dt, rows, cols, 3);
        for m in [1usize, 3, 9] {
            let x = random(m * cols, 11);
            let xq = if is_float(dt) {
                x.clone()
            } else {
                act::QAct::quantize(&x, m, cols).dequantize()
            };
            let scalar = w.matmul_level(&x, m, Level::Scalar);
            for i in 0..m {
                for r in 0..rows {
                    let (ws, xs) = (&wf[r * cols..(r + 1) * cols], &xq[i * cols..(i + 1) * cols]);
                    let want: f64 = ws.iter().zip(xs).map(|(a, b)| *a as f64 * *b as f64).sum();
                    let mag: f64 = ws
                        .iter()
                        .zip(xs)
                        .map(|(a, b)| (*a as f64 * *b as f64).abs())
                        .sum();
                    let g = scalar[i * rows + r] as f64;
                    assert!(
                        (g - want).abs() <= 1e-5 * mag + 1e-6,
                        "{dt:?} scalar m={m} [{i},{r}]: {g} vs {want}"
                    );
                }
            }
            for level in levels() {
                let got = w.matmul_level(&x, m, level);
                for (k, (g, s)) in got.iter().zip(&scalar).enumerate() {
                    assert!(
                        (g - s).abs() <= 1e-5 * (1.0 + s.abs()) * (cols as f32).sqrt(),
                        "{dt:?} {level:?} m={m} [{k}]: {g} vs {s}"
                    );
                }
            }
        }
    }
}

#[test]
fn concat_and_select_rows_move_whole_rows() {
    let (a, af) = quantized(GgmlDType::Q4_1, 5, 64, 1);
    let (b, bf) = quantized(GgmlDType::Q4_1, 3, 64, 2);
    let c = QMatrix::concat_rows(&[&a, &b]).unwrap();
    assert_eq!((c.rows(), c.cols(), c.dtype()), (8, 64, GgmlDType::Q4_1));
    let cf = c.dequantize();
    assert_eq!(&cf[..5 * 64], &af[..]);
    assert_eq!(&cf[5 * 64..], &bf[..]);
    let s = c.select_rows(&[7, 0, 0, 6]).unwrap();
    let mut row = vec![0f32; 64];
    for (i, src) in [7usize, 0, 0, 6].iter().enumerate() {
        s.dequantize_row(i, &mut row);
        assert_eq!(row, cf[src * 64..(src + 1) * 64]);
    }
    assert_eq!(s.as_bytes().len(), 4 * s.row_bytes());
    assert!(c.select_rows(&[8]).is_err());
    let (d, _) = quantized(GgmlDType::Q8_0, 2, 64, 3);
    assert!(QMatrix::concat_rows(&[&a, &d]).is_err());
    let (e, _) = quantized(GgmlDType::Q4_1, 2, 96, 3);
    assert!(QMatrix::concat_rows(&[&a, &e]).is_err());
    assert!(QMatrix::concat_rows(&[]).is_err());
}

#[test]
fn bad_shapes_are_refused() {
    // Q4_1: 20 bytes per 32 weights.
    assert!(QMatrix::new(GgmlDType::Q4_1, 2, 64, vec![0; 80]).is_ok());
    assert!(QMatrix::new(GgmlDType::Q4_1, 2, 64, vec![0; 79]).is_err());
    assert!(QMatrix::new(GgmlDType::Q4_1, 2, 48, vec![0; 60]).is_err());
    assert!(QMatrix::new(GgmlDType::Q4K, 1, 128, vec![0; 72]).is_err());
    assert!(QMatrix::new(GgmlDType::Q8K, 1, 256, vec![0; 292]).is_err());
    assert!(QMatrix::new(GgmlDType::F16, 3, 5, vec![0; 30]).is_ok());
    let w = QMatrix::new(GgmlDType::Q8_0, 0, 64, vec![]).unwrap();
    assert!(w.matmul_t(&[0.0; 64], 1).is_empty());
}
