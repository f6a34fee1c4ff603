//! Requests that wait in the queue together and need the same kind of pass are decoded
//! together: one [`generate_batch`] call advances every answer by a token per step, so the
//! model's weights are streamed once per step for all of them. That covers dense requests and
//! static policies (`shortgpt`, `unified_skip`: a skip plan, no per-token reading); each answer
//! is still exactly what it would be alone, and a stop string, a client that leaves or a bad
//! prompt ends that request alone. Policies that read the layers run alone (their exits are per
//! token).

use super::text_stream::{Cancelled, StopHit, TextStream};
use super::worker::{Job, Prepared, Summary, Worker};
use crate::engine::generate_batch::{generate_batch, BatchRequest};
use crate::engine::FinishReason;
use anyhow::{anyhow, Result};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

impl Worker {
    /// Answer `jobs` (all with the same [`Worker::batch_key`]) as one batch.
    pub(super) fn answer_batch(&self, jobs: Vec<Job>) {
        self.metrics.batch(jobs.len());
        let mut outcomes: Vec<Option<std::thread::Result<Result<Summary>>>> =
            jobs.iter().map(|_| None).collect();
        // Jobs whose prompt is bad, or whose client already left, end here.
        let mut ready: Vec<(usize, Prepared)> = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            if job.events.is_closed() {
                outcomes[i] = Some(Ok(Err(anyhow!(Cancelled))));
                continue;
            }
            match catch_unwind(AssertUnwindSafe(|| self.prepare(job))) {
                Ok(Ok(p)) => ready.push((i, p)),
                Ok(Err(e)) => outcomes[i] = Some(Ok(Err(e))),
                Err(panic) => outcomes[i] = Some(Err(panic)),
            }
        }
        let run = catch_unwind(AssertUnwindSafe(|| self.run_batch(&jobs, &mut ready)));
        match run {
            Ok(summaries) => {
                for ((i, _), summary) in ready.iter().zip(summaries) {
                    outcomes[*i] = Some(Ok(summary));
                }
            }
            Err(panic) => {
                // One panic fails the whole step; the first request reports its message.
                let mut panic = Some(panic);
                for (i, _) in &ready {
                    outcomes[*i] = Some(match panic.take() {
                        Some(p) => Err(p),
                        None => Ok(Err(anyhow!(
                            "the engine failed on another request of this batch"
                        ))),
                    });
                }
            }
        }
        for (job, outcome) in jobs.iter().zip(outcomes) {
            if let Some(outcome) = outcome {
                self.conclude(job, outcome);
            }
        }
    }

    fn run_batch(&self, jobs: &[Job], ready: &mut [(usize, Prepared)]) -> Vec<Result<Summary>> {
        let engine = &self.engine;
        let mut texts: Vec<TextStream> = ready
            .iter()
            .map(|(i, _)| TextStream::new(engine, &jobs[*i].events, &jobs[*i].stop))
            .collect();
        let mut first_tokens: Vec<Option<Instant>> = vec![None; ready.len()];
        let mut hooks: Vec<_> = ready.iter_mut().map(|(_, p)| p.hook.take()).collect();
        let requests = ready
            .iter()
            .zip(hooks.iter_mut())
            .map(|((_, p), hook)| BatchRequest {
                prompt: &p.ids,
                params: &p.params,
                hook: hook
                    .as_deref_mut()
                    .map(|h| h as &mut dyn crate::hook::LayerHook),
            })
            .collect();
        let results = generate_batch(&engine.model, requests, |r, token, depth| {
            first_tokens[r].get_or_insert_with(Instant::now);
            texts[r].push(token, depth)
        });
        results
            .into_iter()
            .zip(texts.iter_mut())
            .zip(ready)
            .zip(first_tokens)
            .map(|(((result, text), (_, prepared)), first_token)| {
                let finish_reason = match result {
                    Ok(g) => g.finish_reason,
                    Err(e) if e.downcast_ref::<StopHit>().is_some() => FinishReason::Stop,
                    Err(e) => return Err(e),
                };
                self.summary(prepared, text, finish_reason, first_token)
            })
            .collect()
    }
}
