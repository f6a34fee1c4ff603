//! Throughput benchmark: dense prefill and decode tokens/s, ours beside other engines, measured
//! in one run so the ratio compares like with like (same process, threads, dtype, prompt).
//!
//! Every engine is timed the same way, from the outside: a request for 1 new token is the
//! prefill (plus one sampling step), a request for `1 + decode_tokens` adds the decode steps, so
//! decode time is the difference. Each engine gets one warm-up run that is not counted; repeats
//! alternate between engines so background load hits them alike; the median repeat is reported.

use crate::engine::generate::{generate_dense, GenerationParams};
use crate::engine::{Engine, SamplingParams};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::time::Instant;

/// An engine under test: greedy generation of exactly `max_tokens` new tokens (eos ignored).
pub trait Contender {
    fn name(&self) -> &str;
    /// Generate and return how many tokens were produced.
    fn generate(&self, prompt: &[u32], max_tokens: usize) -> Result<usize>;
}

/// Our dense engine, no hook.
pub struct DenseContender<'a> {
    pub engine: &'a Engine,
}

impl Contender for DenseContender<'_> {
    fn name(&self) -> &str {
        "adainfer-dense"
    }

    fn generate(&self, prompt: &[u32], max_tokens: usize) -> Result<usize> {
        let params = GenerationParams {
            max_tokens,
            sampling: SamplingParams::greedy(),
            stop_tokens: vec![],
        };
        Ok(
            generate_dense(&self.engine.model, prompt, &params, |_| Ok(()))?
                .tokens
                .len(),
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchSpec {
    pub prompt_tokens: usize,
    pub decode_tokens: usize,
    pub repeats: usize,
}

/// One engine's median timings.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub engine: String,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens_per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub spec: BenchSpec,
    pub threads: usize,
    pub results: Vec<Throughput>,
}

impl BenchReport {
    /// `(prefill, decode)` speed of the first engine (ours) over `other`'s.
    pub fn ratio_to(&self, other: &str) -> Option<(f64, f64)> {
        let ours = self.results.first()?;
        let theirs = self.results.iter().find(|t| t.engine == other)?;
        Some((
            ours.prefill_tokens_per_second / theirs.prefill_tokens_per_second,
            ours.decode_tokens_per_second / theirs.decode_tokens_per_second,
        ))
    }
}

/// A deterministic prompt of `n` in-vocabulary ids (spread over the vocabulary, never the same
/// id twice in a row), so every engine sees the same tokens without a tokenizer in the loop.
pub fn bench_prompt(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 11) % vocab) as u32).collect()
}

fn timed(c: &dyn Contender, prompt: &[u32], max_tokens: usize) -> Result<f64> {
    let start = Instant::now();
    let produced = c
        .generate(prompt, max_tokens)
        .with_context(|| format!("{} failed", c.name()))?;
    let seconds = start.elapsed().as_secs_f64();
    if produced != max_tokens {
        bail!(
            "{} produced {produced} tokens instead of {max_tokens}",
            c.name()
        );
    }
    Ok(seconds)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Time every contender on the same prompt; the first is the one ratios are taken for.
pub fn run(contenders: &[&dyn Contender], spec: &BenchSpec, vocab: usize) -> Result<BenchReport> {
    if contenders.is_empty() {
        bail!("nothing to benchmark");
    }
    if spec.prompt_tokens == 0 || spec.decode_tokens == 0 || spec.repeats == 0 {
        bail!("prompt tokens, decode tokens and repeats must all be at least 1");
    }
    let prompt = bench_prompt(spec.prompt_tokens, vocab);
    let full = 1 + spec.decode_tokens;
    for c in contenders {
        timed(*c, &prompt, full).with_context(|| format!("warm-up of {}", c.name()))?;
    }
    let mut prefill = vec![Vec::new(); contenders.len()];
    let mut decode = vec![Vec::new(); contenders.len()];
    for r in 0..spec.repeats {
        // Alternate the order so neither engine always runs right after the other.
        let order: Vec<usize> = if r % 2 == 0 {
            (0..contenders.len()).collect()
        } else {
            (0..contenders.len()).rev().collect()
        };
        for i in order {
            let p = timed(contenders[i], &prompt, 1)?;
            let t = timed(contenders[i], &prompt, full)?;
            prefill[i].push(p);
            // Clamped: under heavy background load the two runs can disagree on the prefill.
            decode[i].push((t - p).max(1e-9));
        }
    }
    let results = contenders
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let p = median(prefill[i].clone());
            let d = median(decode[i].clone());
            Throughput {
                engine: c.name().to_string(),
                prefill_seconds: p,
                decode_seconds: d,
                prefill_tokens_per_second: spec.prompt_tokens as f64 / p,
                decode_tokens_per_second: spec.decode_tokens as f64 / d,
            }
        })
        .collect();
    Ok(BenchReport {
        spec: spec.clone(),
        threads: candle_core::utils::get_num_threads(),
        results,
    })
}

/// Dense decode throughput of `batch` requests answered one after another vs together
/// ([`crate::engine::generate_batch`]), what the server's batching buys.
#[derive(Debug, Clone, Serialize)]
pub struct BatchThroughput {
    pub batch: usize,
    /// Generated tokens per second over all requests (prefills included), median repeat.
    pub sequential_tokens_per_second: f64,
    pub batched_tokens_per_second: f64,
    pub speedup: f64,
}

pub fn batch_throughput(
    engine: &Engine,
    spec: &BenchSpec,
    batch: usize,
) -> Result<BatchThroughput> {
    if batch < 2 {
        bail!("--batch must be at least 2 to compare with one request at a time");
    }
    let vocab = engine.config().vocab_size;
    // Different prompts (rotated ids), the same lengths: every request does the same work.
    let prompts: Vec<Vec<u32>> = (0..batch)
        .map(|b| {
            let mut p = bench_prompt(spec.prompt_tokens + b, vocab);
            p.drain(..b);
            p
        })
        .collect();
    let params = GenerationParams {
        max_tokens: spec.decode_tokens,
        sampling: SamplingParams::greedy(),
        stop_tokens: vec![],
    };
    let total = (batch * spec.decode_tokens) as f64;
    let sequential = || -> Result<f64> {
        let start = Instant::now();
        for p in &prompts {
            generate_dense(&engine.model, p, &params, |_| Ok(()))?;
        }
        Ok(start.elapsed().as_secs_f64())
    };
    let together = || -> Result<f64> {
        use crate::engine::generate_batch::{generate_batch, BatchRequest};
        let requests = prompts
            .iter()
            .map(|p| BatchRequest {
                prompt: p,
                params: &params,
                hook: None,
            })
            .collect();
        let start = Instant::now();
        let results = generate_batch(&engine.model, requests, |_, _, _| Ok(()));
        let seconds = start.elapsed().as_secs_f64();
        for r in results {
            r?;
        }
        Ok(seconds)
    };
    sequential()?;
    together()?;
    let (mut seq, mut bat) = (Vec::new(), Vec::new());
    for r in 0..spec.repeats {
        if r % 2 == 0 {
            seq.push(sequential()?);
            bat.push(together()?);
        } else {
            bat.push(together()?);
            seq.push(sequential()?);
        }
    }
    let (s, b) = (total / median(seq), total / median(bat));
    Ok(BatchThroughput {
        batch,
        sequential_tokens_per_second: s,
        batched_tokens_per_second: b,
        speedup: b / s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Counts calls and returns what it was asked for (or one token short when broken).
    struct Fake {
        calls: Cell<usize>,
        short: bool,
    }

    impl Contender for Fake {
        fn name(&self) -> &str {
            "fake"
        }
        fn generate(&self, _prompt: &[u32], max_tokens: usize) -> Result<usize> {
            self.calls.set(self.calls.get() + 1);
            Ok(max_tokens - usize::from(self.short))
        }
    }

    #[test]
    fn runs_warm_up_plus_two_requests_per_repeat() {
        let fake = Fake {
            calls: Cell::new(0),
            short: false,
        };
        let spec = BenchSpec {
            prompt_tokens: 4,
            decode_tokens: 3,
            repeats: 5,
        };
        let contender: &dyn Contender = &fake;
        let report = run(&[contender], &spec, 100).unwrap();
        assert_eq!(fake.calls.get(), 1 + 2 * 5);
        assert_eq!(report.results.len(), 1);
        assert_eq!(report.results[0].engine, "fake");
        assert!(report.ratio_to("fake").is_some());
        assert_eq!(report.ratio_to("other"), None);
    }

    #[test]
    fn an_engine_that_stops_early_is_an_error() {
        let fake = Fake {
            calls: Cell::new(0),
            short: true,
        };
        let spec = BenchSpec {
            prompt_tokens: 4,
            decode_tokens: 3,
            repeats: 1,
        };
        let contender: &dyn Contender = &fake;
        let err = run(&[contender], &spec, 100).unwrap_err();
        assert!(format!("{err:#}").contains("instead of 4"), "{err:#}");
    }

    #[test]
    fn prompt_is_deterministic_and_in_vocabulary() {
        let p = bench_prompt(50, 4096);
        assert_eq!(p, bench_prompt(50, 4096));
        assert!(p.iter().all(|&t| t < 4096));
        assert!(p.windows(2).all(|w| w[0] != w[1]));
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
