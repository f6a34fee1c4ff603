//! Generation for several requests together: each prompt is prefilled on its own, then every
//! unfinished sequence advances one token per [`DecoderModel::decode_batch`] step (sequences
//! whose passes skip the same blocks share a step). Sequences finish independently (stop token,
//! `max_tokens`, or their callback saying stop), and each gets exactly the tokens it would get
//! alone: dense ones those of [`super::generate::generate_dense`], ones with a plan-only hook (a
//! static policy) those of early exit with `kv_fill = propagate`. `generate_dense` keeps its own
//! plain one-sequence loop on purpose: it is the reference these batches are tested against.

use super::generate::{check_request, FinishReason, Generation, GenerationParams};
use super::kv_fill::{step, Backlog, KvFill};
use super::model::{DecoderModel, Outputs};
use super::sampling::Sampler;
use super::KvCache;
use crate::hook::{LayerHook, PassInfo, SkipPlan};
use anyhow::{anyhow, bail, Result};
use std::time::Instant;

/// One request of a batch.
pub struct BatchRequest<'a> {
    pub prompt: &'a [u32],
    pub params: &'a GenerationParams,
    /// `None`: dense. Otherwise a hook that only plans skips ([`LayerHook::watches_layers`]
    /// false); one that watches layers is refused (its exits are per sequence).
    pub hook: Option<&'a mut dyn LayerHook>,
}

/// One sequence of a batch while it runs.
struct Running {
    sampler: Sampler,
    cache: KvCache,
    logits: Vec<f32>,
    /// Blocks the pass that produced `logits` ran.
    depth: usize,
    tokens: Vec<u32>,
    prefill_seconds: f64,
    decode_start: Instant,
}

/// Prefill one request on its own.
fn prefill(model: &DecoderModel, request: &mut BatchRequest<'_>) -> Result<Running> {
    let start = Instant::now();
    check_request(model, request.prompt, request.params.max_tokens)?;
    let sampler = Sampler::for_prompt(request.params.sampling.clone(), request.prompt)?;
    let mut cache = model.new_cache();
    let (logits, depth) = match request.hook.as_deref_mut() {
        None => {
            let out = model.forward(request.prompt, &mut cache, None, Outputs::LastToken)?;
            (out.last_logits()?, model.num_layers())
        }
        Some(hook) if hook.watches_layers() => bail!(
            "hook {} reads the layers, so it cannot share a batch; run it alone",
            hook.name()
        ),
        Some(hook) => {
            let backlog = &mut Backlog::default();
            let out = step(
                model,
                request.prompt,
                &mut cache,
                backlog,
                Some(hook),
                KvFill::Propagate,
            )?;
            (out.logits, out.depth)
        }
    };
    Ok(Running {
        sampler,
        cache,
        logits,
        depth,
        tokens: Vec::new(),
        prefill_seconds: start.elapsed().as_secs_f64(),
        decode_start: Instant::now(),
    })
}

/// Generate for every request together. `on_token(i, token, depth)` sees sequence `i`'s tokens
/// as they come, with the blocks run for each; an error from it ends that sequence alone, and
/// is its result.
pub fn generate_batch(
    model: &DecoderModel,
    mut requests: Vec<BatchRequest<'_>>,
    mut on_token: impl FnMut(usize, u32, usize) -> Result<()>,
) -> Vec<Result<Generation>> {
    let mut results: Vec<Option<Result<Generation>>> = requests.iter().map(|_| None).collect();
    let mut running: Vec<Option<Running>> = Vec::with_capacity(requests.len());
    for (i, request) in requests.iter_mut().enumerate() {
        match prefill(model, request) {
            Ok(r) => running.push(Some(r)),
            Err(e) => {
                results[i] = Some(Err(e));
                running.push(None);
            }
        }
    }
    loop {
        // Sample each running sequence's next token; finish those that are done.
        let mut next_tokens: Vec<(usize, u32)> = Vec::new();
        for (i, slot) in running.iter_mut().enumerate() {
            let Some(r) = slot.as_mut() else { continue };
            let (prompt, params) = (requests[i].prompt, requests[i].params);
            let next = r.sampler.sample(&r.logits);
            let finish = if params.stop_tokens.contains(&next) {
                Some(FinishReason::Stop)
            } else {
                r.tokens.push(next);
                if let Err(e) = on_token(i, next, r.depth) {
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
                None => next_tokens.push((i, next)),
            }
        }
        if next_tokens.is_empty() {
            break;
        }
        for (rows, outcome) in decode_step(model, &mut requests, &mut running, &next_tokens) {
            if let Err(e) = outcome {
                // A failed step fails the sequences in it.
                let message = format!("{e:#}");
                for i in rows {
                    results[i] = Some(Err(anyhow!("{message}")));
                    running[i] = None;
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow!("sequence ended without a result"))))
        .collect()
}

/// One token for every `(row, token)`: rows are grouped by the blocks their hooks skip and each
/// group runs as one batch. Returns each group's rows and whether its step worked.
fn decode_step(
    model: &DecoderModel,
    requests: &mut [BatchRequest<'_>],
    running: &mut [Option<Running>],
    next_tokens: &[(usize, u32)],
) -> Vec<(Vec<usize>, Result<()>)> {
    let n = model.num_layers();
    let mut groups: Vec<(SkipPlan, Vec<usize>, Vec<u32>)> = Vec::new();
    let mut failed = Vec::new();
    for &(i, token) in next_tokens {
        let offset = running[i].as_ref().map_or(0, |r| r.cache.seq_len());
        let plan = match requests[i].hook.as_deref_mut() {
            None => Ok(SkipPlan::none()),
            Some(hook) => hook.begin_pass(&PassInfo {
                num_layers: n,
                num_tokens: 1,
                offset,
            }),
        };
        match plan {
            Ok(plan) => match groups.iter_mut().find(|(p, _, _)| *p == plan) {
                Some((_, rows, tokens)) => {
                    rows.push(i);
                    tokens.push(token);
                }
                None => groups.push((plan, vec![i], vec![token])),
            },
            Err(e) => failed.push((vec![i], Err(e))),
        }
    }
    for (plan, rows, tokens) in groups {
        let mut caches: Vec<&mut KvCache> = running
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| rows.contains(i))
            .filter_map(|(_, slot)| slot.as_mut().map(|r| &mut r.cache))
            .collect();
        let outcome = model
            .decode_batch(&tokens, &mut caches, &plan)
            .map(|logits| {
                let depth = n - plan.layers().count();
                for (&i, l) in rows.iter().zip(logits) {
                    if let Some(r) = running[i].as_mut() {
                        r.logits = l;
                        r.depth = depth;
                    }
                }
            });
        failed.push((rows, outcome));
    }
    failed
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
                ..SamplingParams::greedy()
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
        let requests = cases
            .iter()
            .map(|(p, g)| BatchRequest {
                prompt: p,
                params: g,
                hook: None,
            })
            .collect();
        let mut seen = vec![Vec::new(); cases.len()];
        let results = generate_batch(&model, requests, |i, t, depth| {
            assert_eq!(depth, 3);
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
        let params = GenerationParams::greedy(5);
        let requests = vec![
            BatchRequest {
                prompt: &[1, 2],
                params: &params,
                hook: None,
            },
            BatchRequest {
                prompt: &[3],
                params: &params,
                hook: None,
            },
        ];
        let results = generate_batch(&model, requests, |i, _, _| {
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

    /// Skips the middle block of three on every pass, reading nothing: a static policy.
    struct SkipMiddle;

    impl LayerHook for SkipMiddle {
        fn name(&self) -> &str {
            "skip_middle"
        }
        fn begin_pass(&mut self, _info: &PassInfo) -> Result<SkipPlan> {
            Ok(SkipPlan::from_layers([1]))
        }
        fn after_layer(
            &mut self,
            _view: &mut crate::hook::LayerView<'_>,
        ) -> Result<crate::hook::Decision> {
            Ok(crate::hook::Decision::Continue)
        }
        fn watches_layers(&self) -> bool {
            false
        }
    }

    #[test]
    fn plan_only_hooks_share_steps_and_match_early_exit_with_propagate() {
        use crate::engine::early_exit::{generate_early_exit, FixedExit};
        let model = SyntheticSpec::tiny(3).build(DType::F32).unwrap();
        let params = GenerationParams::greedy(5);
        let prompts: [&[u32]; 3] = [&[5, 9, 100], &[7, 7], &[5, 9, 100]];
        let (mut a, mut b) = (SkipMiddle, SkipMiddle);
        let mut watching = FixedExit::new(2, 3).unwrap();
        let requests = vec![
            BatchRequest {
                prompt: prompts[0],
                params: &params,
                hook: Some(&mut a),
            },
            BatchRequest {
                prompt: prompts[1],
                params: &params,
                hook: Some(&mut b),
            },
            BatchRequest {
                prompt: prompts[2],
                params: &params,
                hook: None,
            },
            BatchRequest {
                prompt: prompts[2],
                params: &params,
                hook: Some(&mut watching),
            },
        ];
        let mut depths = vec![Vec::new(); 4];
        let results = generate_batch(&model, requests, |i, _, depth| {
            depths[i].push(depth);
            Ok(())
        });
        for i in 0..2 {
            let want = generate_early_exit(
                &model,
                prompts[i],
                &params,
                &mut SkipMiddle,
                KvFill::Propagate,
                |_, _| Ok(()),
            )
            .unwrap();
            assert_eq!(
                results[i].as_ref().unwrap().tokens,
                want.generation.tokens,
                "row {i}"
            );
            assert_eq!(depths[i], want.depths, "row {i}");
            assert!(depths[i].iter().all(|&d| d == 2));
        }
        let dense = generate_dense(&model, prompts[2], &params, |_| Ok(())).unwrap();
        assert_eq!(results[2].as_ref().unwrap().tokens, dense.tokens);
        assert!(depths[2].iter().all(|&d| d == 3));
        let e = results[3].as_ref().unwrap_err().to_string();
        assert!(e.contains("cannot share a batch"), "{e}");
    }
}
