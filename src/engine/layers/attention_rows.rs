//! Attention of a few query rows over the cache on the CPU in f32: decode steps and speculative
//! verification.
//!
//! Each query row's arithmetic depends on its own causal span only — scores over that span
//! (window included, no mask tensor), softmax, weighted sum of values in blocks of positions
//! aligned to the cache, not to the pass — so a row gets the same bits whether it is decoded by
//! itself or verified beside drafts: a verification pass then settles exactly the tokens dense
//! decoding would. The query heads that share a KV head read its keys and values together,
//! block by block, while the block is in L1. It also skips what candle's batched path pays per
//! row (a mask tensor and its broadcast add, small-matrix GEMM packing). Prefill (more rows than
//! [`MAX_ROWS`]) keeps candle's GEMM.

use candle_core::{DType, Storage, Tensor};
use rayon::prelude::*;

/// Query rows up to which this path is taken.
pub(crate) const MAX_ROWS: usize = 16;

/// Multiply-adds (over all heads and rows) from which heads are split over threads.
const PARALLEL_FROM: usize = 1 << 17;

/// One attention's shapes and placement of the rows.
#[derive(Clone, Copy)]
pub(crate) struct RowsShape {
    pub(crate) num_heads: usize,
    pub(crate) num_kv_heads: usize,
    pub(crate) head_dim: usize,
    /// Position of the first query row; the cache holds positions `0..offset + rows`.
    pub(crate) offset: usize,
    /// Each position sees itself and the `window - 1` before it (`None`: all before it).
    pub(crate) window: Option<usize>,
    pub(crate) scale: f32,
}

/// `q` `[1, heads, rows, head_dim]`, `k`/`v` `[1, kv_heads, offset + rows, head_dim]` (views of
/// the cache) → `[1, rows, heads * head_dim]`; `None` when this path does not apply (other
/// dtypes or devices, too many rows, layouts it does not read).
pub(crate) fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    shape: RowsShape,
) -> candle_core::Result<Option<Tensor>> {
    let rows = q.dim(2)?;
    let usable = |t: &Tensor| t.dtype() == DType::F32 && t.device().is_cpu() && t.dims()[0] == 1;
    if rows > MAX_ROWS || !usable(q) || !usable(k) || !usable(v) {
        return Ok(None);
    }
    let total = shape.offset + rows;
    if k.dim(2)? != total || v.dim(2)? != total {
        return Ok(None);
    }
    let (q_store, q_layout) = q.storage_and_layout();
    let (k_store, k_layout) = k.storage_and_layout();
    let (v_store, v_layout) = v.storage_and_layout();
    let (Storage::Cpu(qc), Storage::Cpu(kc), Storage::Cpu(vc)) = (&*q_store, &*k_store, &*v_store)
    else {
        return Ok(None);
    };
    let Some((q_start, q_end)) = q_layout.contiguous_offsets() else {
        return Ok(None);
    };
    let d = shape.head_dim;
    // Keys and values: each position's head_dim values contiguous, heads `stride[1]` apart.
    let kv_view = |layout: &candle_core::Layout| {
        let s = layout.stride();
        (s[3] == 1 && s[2] == d).then_some((layout.start_offset(), s[1]))
    };
    let (Some(k_at), Some(v_at)) = (kv_view(k_layout), kv_view(v_layout)) else {
        return Ok(None);
    };
    let job = Job {
        q: &qc.as_slice::<f32>()?[q_start..q_end],
        k: Heads::new(kc.as_slice::<f32>()?, k_at),
        v: Heads::new(vc.as_slice::<f32>()?, v_at),
        rows,
        shape,
    };
    let by_head = job.run();
    // [heads, rows, d] → [rows, heads * d]: the same layout for one row (a decode step).
    let out = if rows == 1 {
        by_head
    } else {
        let mut out = vec![0f32; by_head.len()];
        for h in 0..shape.num_heads {
            for r in 0..rows {
                let from = (h * rows + r) * d;
                let to = (r * shape.num_heads + h) * d;
                out[to..to + d].copy_from_slice(&by_head[from..from + d]);
            }
        }
        out
    };
    Ok(Some(Tensor::from_vec(
        out,
        (1, rows, shape.num_heads * d),
        q.device(),
    )?))
}

/// Per-head rows of a cache buffer: head `h`, position `t` starts at `start + h * stride + t * d`.
#[derive(Clone, Copy)]
struct Heads<'a> {
    data: &'a [f32],
    start: usize,
    stride: usize,
}

impl<'a> Heads<'a> {
    fn new(data: &'a [f32], (start, stride): (usize, usize)) -> Self {
        Self {
            data,
            start,
            stride,
        }
    }

    /// Positions `from..to` of head `h`, `d` values each.
    fn span(&self, h: usize, from: usize, to: usize, d: usize) -> &'a [f32] {
        let base = self.start + h * self.stride;
        &self.data[base + from * d..base + to * d]
    }
}

struct Job<'a> {
    q: &'a [f32],
    k: Heads<'a>,
    v: Heads<'a>,
    rows: usize,
    shape: RowsShape,
}

impl Job<'_> {
    /// `[heads, rows, d]`; KV heads in parallel when the work is large enough.
    fn run(&self) -> Vec<f32> {
        let RowsShape {
            num_heads,
            num_kv_heads,
            head_dim: d,
            offset,
            window,
            scale,
        } = self.shape;
        let group = num_heads / num_kv_heads;
        let total = offset + self.rows;
        // Query j of a KV head's group is head `j / rows`, row `j % rows`: its causal span.
        let spans: Vec<(usize, usize)> = (0..group * self.rows)
            .map(|j| {
                let pos = offset + j % self.rows;
                (window.map_or(0, |w| (pos + 1).saturating_sub(w)), pos + 1)
            })
            .collect();
        let per_group = group * self.rows * d;
        let mut out = vec![0f32; num_kv_heads * per_group];
        let fast = simd_available();
        let kv_head = |(g, out): (usize, &mut [f32])| {
            let qs = &self.q[g * per_group..(g + 1) * per_group];
            let keys = self.k.span(g, 0, total, d);
            let values = self.v.span(g, 0, total, d);
            let mut scores = vec![0f32; spans.len() * total];
            let group = Group {
                qs,
                spans: &spans,
                keys,
                values,
                d,
                total,
                scale,
            };
            #[cfg(target_arch = "x86_64")]
            if fast {
                // SAFETY: `fast` is `simd_available()`: AVX2 and FMA were detected on this CPU.
                return unsafe { avx2::group(&group, &mut scores, out) };
            }
            let _ = fast;
            group_portable(&group, &mut scores, out)
        };
        let work = num_heads * self.rows * total * d;
        let chunks = out.chunks_mut(per_group).enumerate();
        if work >= PARALLEL_FROM && num_kv_heads > 1 && rayon::current_num_threads() > 1 {
            chunks.collect::<Vec<_>>().into_par_iter().for_each(kv_head);
        } else {
            chunks.for_each(kv_head);
        }
        out
    }
}

/// The queries of one KV head (`spans.len()` of them, `d` values each) and that head's keys and
/// values for positions `0..total`.
struct Group<'a> {
    qs: &'a [f32],
    /// Positions `from..to` query j attends to.
    spans: &'a [(usize, usize)],
    keys: &'a [f32],
    values: &'a [f32],
    d: usize,
    total: usize,
    scale: f32,
}

fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// softmax(q·kᵀ · scale) · v for each query over its span, in plain Rust, query by query.
fn group_portable(g: &Group, scores: &mut [f32], out: &mut [f32]) {
    let d = g.d;
    for (j, &(from, to)) in g.spans.iter().enumerate() {
        let q = &g.qs[j * d..(j + 1) * d];
        let row = &mut scores[j * g.total + from..j * g.total + to];
        for (s, k) in row.iter_mut().zip(g.keys[from * d..to * d].chunks_exact(d)) {
            *s = q.iter().zip(k).fold(0.0, |a, (x, y)| a + x * y) * g.scale;
        }
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for s in row.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        let out = &mut out[j * d..(j + 1) * d];
        for (&w, v) in row.iter().zip(g.values[from * d..to * d].chunks_exact(d)) {
            for (o, x) in out.iter_mut().zip(v) {
                *o += w * x;
            }
        }
        let inv = 1.0 / sum;
        for o in out.iter_mut() {
            *o *= inv;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn tensor(seed: u32, dims: &[usize]) -> Tensor {
        let n: usize = dims.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|i| {
                let x = (i as u32)
                    .wrapping_mul(2654435761)
                    .wrapping_add(seed * 7919);
                (x % 2000) as f32 / 1000.0 - 1.0
            })
            .collect();
        Tensor::from_vec(values, dims, &Device::Cpu).unwrap()
    }

    /// softmax(q·kᵀ · scale + causal/window mask) · v, written plainly with candle ops.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, s: RowsShape) -> Vec<f32> {
        let rows = q.dim(2).unwrap();
        let group = s.num_heads / s.num_kv_heads;
        let k = k.repeat_interleave_heads(group);
        let v = v.repeat_interleave_heads(group);
        let scores = (q.matmul(&k.t().unwrap()).unwrap() * s.scale as f64).unwrap();
        let total = s.offset + rows;
        let mask: Vec<f32> = (0..rows)
            .flat_map(|r| {
                let pos = s.offset + r;
                (0..total).map(move |j| {
                    let old = s.window.is_some_and(|w| pos >= w && j <= pos - w);
                    if j > pos || old {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (rows, total), &Device::Cpu).unwrap();
        let scores = scores.broadcast_add(&mask).unwrap();
        let weights = candle_nn::ops::softmax_last_dim(&scores).unwrap();
        weights
            .matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    trait RepeatHeads {
        fn repeat_interleave_heads(&self, group: usize) -> Tensor;
    }

    impl RepeatHeads for Tensor {
        fn repeat_interleave_heads(&self, group: usize) -> Tensor {
            let (b, h, t, d) = self.dims4().unwrap();
            self.unsqueeze(2)
                .unwrap()
                .expand((b, h, group, t, d))
                .unwrap()
                .reshape((b, h * group, t, d))
                .unwrap()
        }
    }

    fn shape(offset: usize, window: Option<usize>) -> RowsShape {
        RowsShape {
            num_heads: 6,
            num_kv_heads: 2,
            head_dim: 20,
            offset,
            window,
            scale: 0.2,
        }
    }

    #[test]
    fn matches_masked_softmax_attention_with_and_without_a_window() {
        for (rows, offset, window) in [(1, 9, None), (4, 9, None), (3, 0, None), (5, 9, Some(4))] {
            let s = shape(offset, window);
            let q = tensor(1, &[1, 6, rows, 20]);
            let k = tensor(2, &[1, 2, offset + rows, 20]);
            let v = tensor(3, &[1, 2, offset + rows, 20]);
            let got = attend(&q, &k, &v, s).unwrap().expect("f32 on the CPU");
            assert_eq!(got.dims(), &[1, rows, 120]);
            let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let want = reference(&q, &k, &v, s);
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                worst < 1e-5,
                "rows {rows} offset {offset} window {window:?}: {worst}"
            );
        }
    }

    #[test]
    fn a_row_gets_the_same_bits_alone_as_beside_other_rows() {
        // Spans over several blocks of positions, with and without a window that cuts them.
        for (rows, offset, window) in [(5, 11, None), (7, 90, None), (6, 70, Some(37))] {
            let q = tensor(4, &[1, 6, rows, 20]);
            let k = tensor(5, &[1, 2, offset + rows, 20]);
            let v = tensor(6, &[1, 2, offset + rows, 20]);
            let together = attend(&q, &k, &v, shape(offset, window)).unwrap().unwrap();
            for r in 0..rows {
                let alone = attend(
                    &q.narrow(2, r, 1).unwrap().contiguous().unwrap(),
                    &k.narrow(2, 0, offset + r + 1).unwrap(),
                    &v.narrow(2, 0, offset + r + 1).unwrap(),
                    shape(offset + r, window),
                )
                .unwrap()
                .unwrap();
                let bits = |t: &Tensor| -> Vec<u32> {
                    let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    v.iter().map(|x| x.to_bits()).collect()
                };
                let row = together.narrow(1, r, 1).unwrap();
                assert_eq!(bits(&row), bits(&alone), "row {r} at offset {offset}");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_simd_and_portable_loops_agree() {
        if !simd_available() {
            return;
        }
        let (d, total) = (20, 100);
        let values = |seed: u32, n: usize| -> Vec<f32> { tensor(seed, &[n]).to_vec1().unwrap() };
        let (qs, keys, vals) = (values(7, 3 * d), values(8, total * d), values(9, total * d));
        let spans = [(0, 98), (40, 99), (0, 100)];
        let group = Group {
            qs: &qs,
            spans: &spans,
            keys: &keys,
            values: &vals,
            d,
            total,
            scale: 0.3,
        };
        let run = |simd: bool| {
            let mut scores = vec![0f32; spans.len() * total];
            let mut out = vec![0f32; spans.len() * d];
            if simd {
                // SAFETY: AVX2 and FMA were checked above.
                unsafe { avx2::group(&group, &mut scores, &mut out) }
            } else {
                group_portable(&group, &mut scores, &mut out)
            }
            out
        };
        let (fast, plain) = (run(true), run(false));
        let worst = fast
            .iter()
            .zip(&plain)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "{worst}");
    }

    #[test]
    fn other_dtypes_and_long_passes_are_left_to_candle() {
        let s = shape(0, None);
        let rows = MAX_ROWS + 1;
        let q = tensor(1, &[1, 6, rows, 20]);
        let k = tensor(2, &[1, 2, rows, 20]);
        assert!(attend(&q, &k, &k, s).unwrap().is_none());
        let q = tensor(1, &[1, 6, 2, 20]).to_dtype(DType::BF16).unwrap();
        let k = tensor(2, &[1, 2, 2, 20]).to_dtype(DType::BF16).unwrap();
        assert!(attend(&q, &k, &k, s).unwrap().is_none());
    }
}
