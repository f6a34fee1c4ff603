//! `x @ wᵀ` for a handful of f32 rows on the CPU: decode steps, speculative verification and
//! small batches.
//!
//! candle's general matmul packs the weight for every product with more than one row, which
//! makes 2–8 rows cost about 4× one row. Here each weight row is read once and dotted with every
//! input row while it is hot in cache, so a few rows cost about what one does: the step is
//! bounded by streaming the weights, not by the row count. Rows beyond [`MAX_ROWS`], other dtypes
//! and other devices go to candle.

use rayon::prelude::*;

/// Most input rows handled here.
pub const MAX_ROWS: usize = 8;

/// Weight rows per parallel task: enough work to amortise scheduling, small enough to balance.
const ROWS_PER_TASK: usize = 64;

/// Below this many weights a product runs on the calling thread: spreading it costs more than it
/// saves (the vendored model's 192-wide layers).
const PARALLEL_FROM: usize = 1 << 17;

/// Whether this module beats candle for `m` rows of a `[n, k]` weight. Measured on the 2-core
/// box: one row is as fast in candle's matrix-vector path unless the product is split across
/// threads; 2–8 rows are 1.5–2.5× faster here (candle packs the weight for them).
pub fn worthwhile(m: usize, n: usize, k: usize) -> bool {
    match m {
        0 => false,
        1 => parallel(n, k),
        m => m <= MAX_ROWS,
    }
}

fn parallel(n: usize, k: usize) -> bool {
    n * k >= PARALLEL_FROM && rayon::current_num_threads() > 1
}

/// `out[i * n + j] = Σ_k x[i * k + ..] · w[j * k + ..]` for `m ≤ MAX_ROWS` rows of `x` (`[m, k]`)
/// and `n` rows of `w` (`[n, k]`), both row-major.
pub fn matmul_t(x: &[f32], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f32> {
    assert!((1..=MAX_ROWS).contains(&m) && x.len() == m * k && w.len() == n * k);
    // Transposed result ([n, m]): each task writes one contiguous block.
    let mut out_t = vec![0f32; n * m];
    let task = |(t, block): (usize, &mut [f32])| {
        let first = t * ROWS_PER_TASK;
        let rows = block.len() / m;
        dot_block(x, m, k, &w[first * k..(first + rows) * k], block);
    };
    if parallel(n, k) {
        out_t
            .par_chunks_mut(ROWS_PER_TASK * m)
            .enumerate()
            .for_each(task);
    } else {
        out_t
            .chunks_mut(ROWS_PER_TASK * m)
            .enumerate()
            .for_each(task);
    }
    let mut out = vec![0f32; m * n];
    for (j, dots) in out_t.chunks(m).enumerate() {
        for (i, d) in dots.iter().enumerate() {
            out[i * n + j] = *d;
        }
    }
    out
}

/// `block[r * m + i] = x[i] · w_rows[r]` for every weight row `r` of `w_rows`.
fn dot_block(x: &[f32], m: usize, k: usize, w_rows: &[f32], block: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked just above); every pointer offset is
            // within the slices, as the asserts in `avx2::block` check.
            return unsafe { avx2::block(x, m, k, w_rows, block) };
        }
    }
    for (r, dots) in block.chunks_mut(m).enumerate() {
        let row = &w_rows[r * k..(r + 1) * k];
        for (i, d) in dots.iter_mut().enumerate() {
            *d = dot(&x[i * k..(i + 1) * k], row);
        }
    }
}

/// Portable dot product in eight independent lanes (the compiler vectorises it).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(p, q)| p * q)
        .sum();
    for (pa, pb) in ca.zip(cb) {
        for l in 0..8 {
            lanes[l] += pa[l] * pb[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// AVX2 + FMA: each chunk of eight weights is loaded once and multiplied into every input
/// row's accumulator; the row count is a constant so the accumulators stay in registers.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn block(x: &[f32], m: usize, k: usize, w_rows: &[f32], block: &mut [f32]) {
        let n = w_rows.len() / k;
        assert!(x.len() == m * k && w_rows.len() == n * k && block.len() == n * m);
        for (r, dots) in block.chunks_mut(m).enumerate() {
            let row = &w_rows[r * k..(r + 1) * k];
            match m {
                1 => rows::<1>(x, k, row, dots),
                2 => rows::<2>(x, k, row, dots),
                3 => rows::<3>(x, k, row, dots),
                4 => rows::<4>(x, k, row, dots),
                5 => rows::<5>(x, k, row, dots),
                6 => rows::<6>(x, k, row, dots),
                7 => rows::<7>(x, k, row, dots),
                _ => rows::<8>(x, k, row, dots),
            }
        }
    }

    /// `dots[i] = x[i] · row` for the `M` rows of `x`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows<const M: usize>(x: &[f32], k: usize, row: &[f32], dots: &mut [f32]) {
        let mut acc = [_mm256_setzero_ps(); M];
        let whole = k / 8 * 8;
        let mut c = 0;
        while c < whole {
            let w = _mm256_loadu_ps(row.as_ptr().add(c));
            for (i, a) in acc.iter_mut().enumerate() {
                let v = _mm256_loadu_ps(x.as_ptr().add(i * k + c));
                *a = _mm256_fmadd_ps(v, w, *a);
            }
            c += 8;
        }
        for (i, a) in acc.iter().enumerate() {
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), *a);
            let tail: f32 = (whole..k).map(|t| x[i * k + t] * row[t]).sum();
            dots[i] = lanes.iter().sum::<f32>() + tail;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|t| x[i * k + t] as f64 * w[j * k + t] as f64)
                    .sum::<f64>() as f32;
            }
        }
        out
    }

    #[test]
    fn matches_the_naive_product_for_every_row_count_and_ragged_sizes() {
        // k not a multiple of 8 and n not a multiple of the task size exercise both tails.
        // The larger size crosses PARALLEL_FROM, so the threaded path runs too.
        for (m, n, k) in (1..=MAX_ROWS).map(|m| (m, 130, 37)).chain([(3, 600, 301)]) {
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 7919) % 211) as f32 / 100.0 - 1.0)
                .collect();
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0)
                .collect();
            let got = matmul_t(&x, m, &w, n, k);
            let want = naive(&x, m, &w, n, k);
            for (g, e) in got.iter().zip(&want) {
                assert!((g - e).abs() <= 1e-4 * (1.0 + e.abs()), "m={m}: {g} vs {e}");
            }
            let portable: Vec<f32> = (0..m)
                .flat_map(|i| (0..n).map(move |j| (i, j)))
                .map(|(i, j)| dot(&x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k]))
                .collect();
            for (p, e) in portable.iter().zip(&want) {
                assert!((p - e).abs() <= 1e-4 * (1.0 + e.abs()), "portable m={m}");
            }
        }
    }
}
