//! Dense generation for several requests together: each prompt is prefilled on its own, then
//! every unfinished sequence advances one token per [`DecoderModel::decode_batch`] step.
//! Sequences finish independently (stop token, `max_tokens`, or their callback saying stop),
//! and each gets exactly the tokens [`super::generate::generate_dense`] would give it.

use super::generate::{check_request, FinishReason, Generation, GenerationParams};
use super::model::{DecoderModel, Outputs};
use super::sampling::Sampler;
use super::KvCache;
use anyhow::Result;
use std::time::Instant;

/// One sequence of a batch while it runs.
struct Running {
    sampler: Sampler,
    cache: KvCache,
    logits: Vec<f32>,
    tokens: Vec<u32>,
    prefill_seconds: f64,
    decode_start: Instant,
}

/// Generate for every `(prompt, params)` together. `on_token(i, token)` sees sequence `i`'s
/// tokens as they come; an error from it ends that sequence alone, and is its result.
pub fn generate_dense_batch(
    model: &DecoderModel,
    requests: &[(&[u32], &GenerationParams)],
    mut on_token: impl FnMut(usize, u32) -> Result<()>,
) -> Vec<Result<Generation>> {
    let mut results: Vec<Option<Result<Generation>>> = requests.iter().map(|_| None).collect();
    let mut running: Vec<Option<Running>> = Vec::with_capacity(requests.len());
    for (i, (prompt, params)) in requests.iter().enumerate() {
        let start = Instant::now();
        let prefilled = check_request(model, prompt, params.max_tokens)
            .and_then(|()| Sampler::new(params.sampling.clone()))
            .and_then(|sampler| {
                let mut cache = model.new_cache();
                let logits = model
                    .forward(prompt, &mut cache, None, Outputs::LastToken)?
                    .last_logits()?;
                Ok(Running {
                    sampler,
                    cache,
                    logits,
                    tokens: Vec::new(),
                    prefill_seconds: start.elapsed().as_secs_f64(),
                    decode_start: Instant::now(),
                })
            });
        match prefilled {
            Ok(r) => running.push(Some(r)),
            Err(e) => {
                results[i] = Some(Err(e));
                running.push(None);
            }
        }
    }
    loop {
        // Sample each running sequence's next token; finish those that are done.
        let mut step: Vec<(usize, u32)> = Vec::new();
        for (i, slot) in running.iter_mut().enumerate() {
            let Some(r) = slot.as_mut() else { continue };
            let (prompt, params) = requests[i];
            let next = r.sampler.sample(&r.logits);
            let finish = if params.stop_tokens.contains(&next) {
                Some(FinishReason::Stop)
            } else {
                r.tokens.push(next);
                if let Err(e) = on_token(i, next) {
                    results[i] = Some(Err(e));
                    *slot = None;
                    continue;
                }
                (r.tokens.len() == params.max_tokens).then_some(FinishReason::Length)
            };
            match finish {
                Some(finish_reason) => {
                    if let Some(r) = slot.take() {
                        results[i] = Some(Ok(Generation {
                            prompt_tokens: prompt.len(),
                            tokens: r.tokens,
                            finish_reason,
                            prefill_seconds: r.prefill_seconds,
                            decode_seconds: r.decode_start.elapsed().as_secs_f64(),
                        }));
                    }
                }
                None => step.push((i, next)),
            }
        }
        if step.is_empty() {
            break;
        }
        let tokens: Vec<u32> = step.iter().map(|&(_, t)| t).collect();
        let mut caches: Vec<&mut KvCache> = running
            .iter_mut()
            .filter_map(|slot| slot.as_mut().map(|r| &mut r.cache))
            .collect();
        match model.decode_batch(&tokens, &mut caches) {
            Ok(logits) => {
                let rows = running.iter_mut().filter_map(Option::as_mut);
                for (r, l) in rows.zip(logits) {
                    r.logits = l;
                }
            }
            Err(e) => {
                // A failed step fails every sequence still running.
                let message = format!("{e:#}");
                for (i, _) in step {
                    results[i] = Some(Err(anyhow::anyhow!("{message}")));
                    running[i] = None;
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("sequence ended without a result"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::generate::generate_dense;
    use crate::engine::synthetic::SyntheticSpec;
    use crate::engine::SamplingParams;
    use candle_core::DType;

    #[test]
    fn each_sequence_gets_exactly_its_dense_tokens() {
        let model = SyntheticSpec::tiny(3).build(DType::F32).unwrap();
        let greedy = |max_tokens, stop_tokens| GenerationParams {
            max_tokens,
            sampling: SamplingParams::greedy(),
            stop_tokens,
        };
        let sampled = GenerationParams {
            max_tokens: 6,
            sampling: SamplingParams {
                temperature: 0.8,
                top_k: 20,
                top_p: 0.9,
                seed: 7,
            },
            stop_tokens: vec![],
        };
        let dense_first = generate_dense(&model, &[5, 9], &greedy(7, vec![]), |_| Ok(())).unwrap();
        // Stop on the third token the first sequence produces, to end one row early.
        let stopper = greedy(7, vec![dense_first.tokens[2]]);
        let cases: Vec<(Vec<u32>, GenerationParams)> = vec![
            (vec![5, 9], greedy(7, vec![])),
            (vec![3, 1, 4, 1, 5], greedy(2, vec![])),
            (vec![5, 9], stopper),
            (vec![77], sampled),
            (vec![], greedy(3, vec![])),
        ];
        let requests: Vec<(&[u32], &GenerationParams)> =
            cases.iter().map(|(p, g)| (p.as_slice(), g)).collect();
        let mut seen = vec![Vec::new(); cases.len()];
        let results = generate_dense_batch(&model, &requests, |i, t| {
            seen[i].push(t);
            Ok(())
        });
        for (i, (prompt, params)) in cases.iter().enumerate().take(4) {
            let want = generate_dense(&model, prompt, params, |_| Ok(())).unwrap();
            let got = results[i].as_ref().unwrap();
            assert_eq!(got.tokens, want.tokens, "sequence {i}");
            assert_eq!(got.finish_reason, want.finish_reason, "sequence {i}");
            assert_eq!(seen[i], want.tokens, "sequence {i} streamed");
        }
        assert_eq!(
            results[2].as_ref().unwrap().finish_reason,
            FinishReason::Stop
        );
        let e = results[4].as_ref().unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn a_callback_error_ends_only_its_sequence() {
        let model = SyntheticSpec::tiny(2).build(DType::F32).unwrap();
        let params = GenerationParams {
            max_tokens: 5,
            sampling: SamplingParams::greedy(),
            stop_tokens: vec![],
        };
        let requests: Vec<(&[u32], &GenerationParams)> = vec![(&[1, 2], &params), (&[3], &params)];
        let results = generate_dense_batch(&model, &requests, |i, _| {
            if i == 0 {
                anyhow::bail!("client went away")
            }
            Ok(())
        });
        assert!(results[0]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("went away"));
        assert_eq!(results[1].as_ref().unwrap().tokens.len(), 5);
    }
}
