//! The few-row attention kernel with AVX2 + FMA (picked at run time by the parent module),
//! blocked over positions so a query's sums depend on its own span only.

use super::Group;
use std::arch::x86_64::*;

/// Positions per block: a block's keys or values (8 KiB at d = 64) stay in L1 while every
/// query of the group reads them. Blocks start at multiples of `BLOCK`, so how a query's sum
/// is split depends on its own span only — never on the queries beside it.
const BLOCK: usize = 32;

/// [`super::group_portable`] with AVX2 + FMA, blocked over positions.
///
/// # Safety
/// AVX2 and FMA must be available (`simd_available`).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn group(g: &Group, scores: &mut [f32], out: &mut [f32]) {
    let (d, total) = (g.d, g.total);
    let first = g.spans.iter().map(|s| s.0).min().unwrap_or(0) / BLOCK * BLOCK;
    let blocks = (first..total).step_by(BLOCK);
    for b in blocks.clone() {
        for (j, &(from, to)) in g.spans.iter().enumerate() {
            let (lo, hi) = (from.max(b), to.min(b + BLOCK));
            let q = &g.qs[j * d..(j + 1) * d];
            let mut t = lo;
            while t + 4 <= hi {
                let k = |i: usize| &g.keys[(t + i) * d..(t + i + 1) * d];
                let dots = dot4(q, [k(0), k(1), k(2), k(3)]);
                for (i, x) in dots.iter().enumerate() {
                    scores[j * total + t + i] = x * g.scale;
                }
                t += 4;
            }
            while t < hi {
                let k = &g.keys[t * d..(t + 1) * d];
                scores[j * total + t] = dot4(q, [k, k, k, k])[0] * g.scale;
                t += 1;
            }
        }
    }
    let mut inv = Vec::with_capacity(g.spans.len());
    for (j, &(from, to)) in g.spans.iter().enumerate() {
        inv.push(softmax_unnormalised(
            &mut scores[j * total + from..j * total + to],
        ));
    }
    for b in blocks {
        for (j, &(from, to)) in g.spans.iter().enumerate() {
            let (lo, hi) = (from.max(b), to.min(b + BLOCK));
            if lo < hi {
                let weights = &scores[j * total + lo..j * total + hi];
                let values = &g.values[lo * d..hi * d];
                add_weighted(weights, values, &mut out[j * d..(j + 1) * d]);
            }
        }
    }
    for (j, &inv) in inv.iter().enumerate() {
        for o in &mut out[j * d..(j + 1) * d] {
            *o *= inv;
        }
    }
}

/// `out += Σ weights[t] · values[t]`, summed in registers 64 outputs at a time (eight
/// independent FMA chains), then 8 at a time, then one.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn add_weighted(weights: &[f32], values: &[f32], out: &mut [f32]) {
    let d = out.len();
    let mut c = 0;
    while c + 64 <= d {
        add_weighted_lanes::<8>(weights, values, out, c);
        c += 64;
    }
    while c + 8 <= d {
        add_weighted_lanes::<1>(weights, values, out, c);
        c += 8;
    }
    for (j, o) in out.iter_mut().enumerate().skip(c) {
        let mut sum = 0f32;
        for (&w, v) in weights.iter().zip(values.chunks_exact(d)) {
            sum = w.mul_add(v[j], sum);
        }
        *o += sum;
    }
}

/// Outputs `c..c + 8·R` of [`add_weighted`], summed in R registers.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn add_weighted_lanes<const R: usize>(
    weights: &[f32],
    values: &[f32],
    out: &mut [f32],
    c: usize,
) {
    let d = out.len();
    let mut acc = [_mm256_setzero_ps(); R];
    for (&w, v) in weights.iter().zip(values.chunks_exact(d)) {
        let wv = _mm256_set1_ps(w);
        for (l, a) in acc.iter_mut().enumerate() {
            let x = _mm256_loadu_ps(v.as_ptr().add(c + 8 * l));
            *a = _mm256_fmadd_ps(wv, x, *a);
        }
    }
    for (l, a) in acc.iter().enumerate() {
        let o = out.as_mut_ptr().add(c + 8 * l);
        _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o), *a));
    }
}

/// `scores` → `exp(score − max)` eight at a time; returns 1 / their sum.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_unnormalised(scores: &mut [f32]) -> f32 {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let m = _mm256_set1_ps(max);
    let mut sum8 = _mm256_setzero_ps();
    let mut chunks = scores.chunks_exact_mut(8);
    for c in &mut chunks {
        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), m));
        _mm256_storeu_ps(c.as_mut_ptr(), e);
        sum8 = _mm256_add_ps(sum8, e);
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), sum8);
    let mut sum = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for s in chunks.into_remainder() {
        let mut one = [*s - max; 8];
        _mm256_storeu_ps(one.as_mut_ptr(), exp8(_mm256_loadu_ps(one.as_ptr())));
        *s = one[0];
        sum += one[0];
    }
    1.0 / sum
}

/// e^x for x ≤ 0 (softmax arguments): x = n·ln 2 + r, e^r by a degree-6 polynomial
/// (relative error ≈ 1e-7), 2^n built in the exponent bits; below −87 the result is 0.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp8(x: __m256) -> __m256 {
    let tiny = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0), _CMP_LT_OQ);
    let x = _mm256_max_ps(x, _mm256_set1_ps(-87.0));
    let n = _mm256_round_ps(
        _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
    );
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_145_75), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm256_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let biased = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    let e = _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(biased, 23)));
    _mm256_andnot_ps(tiny, e)
}

/// `q · k` for four keys: four independent FMA chains.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot4(q: &[f32], k: [&[f32]; 4]) -> [f32; 4] {
    let d = q.len();
    let main = d / 8 * 8;
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i < main {
        let x = _mm256_loadu_ps(q.as_ptr().add(i));
        for (a, k) in acc.iter_mut().zip(k) {
            *a = _mm256_fmadd_ps(x, _mm256_loadu_ps(k.as_ptr().add(i)), *a);
        }
        i += 8;
    }
    let mut sums = [0f32; 4];
    for ((s, a), k) in sums.iter_mut().zip(acc).zip(k) {
        let half = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        let half = _mm_add_ps(half, _mm_movehl_ps(half, half));
        *s = _mm_cvtss_f32(_mm_add_ss(half, _mm_shuffle_ps(half, half, 1)));
        for j in main..d {
            *s = q[j].mul_add(k[j], *s);
        }
    }
    sums
}
