//! Dense requests that wait in the queue together are decoded together: one
//! [`generate_dense_batch`] call advances every answer by a token per step, so the model's
//! weights are streamed once per step for all of them. Each answer is still exactly its dense
//! greedy (or seeded sampled) text; a stop string, a client that leaves or a bad prompt ends that
//! request alone. Requests with an exit policy are not batched (each token's depth is its own).

use super::text_stream::{Cancelled, StopHit, TextStream};
use super::worker::{Job, Prepared, Summary, Worker};
use crate::engine::generate_batch::generate_dense_batch;
use crate::engine::FinishReason;
use anyhow::{anyhow, Result};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

impl Worker {
    /// Answer `jobs` (all dense) as one batch.
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
        let run = catch_unwind(AssertUnwindSafe(|| self.run_batch(&jobs, &ready)));
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

    fn run_batch(&self, jobs: &[Job], ready: &[(usize, Prepared)]) -> Vec<Result<Summary>> {
        let engine = &self.engine;
        let mut texts: Vec<TextStream> = ready
            .iter()
            .map(|(i, _)| TextStream::new(engine, &jobs[*i].events, &jobs[*i].stop))
            .collect();
        let mut first_tokens: Vec<Option<Instant>> = vec![None; ready.len()];
        let requests: Vec<(&[u32], _)> = ready
            .iter()
            .map(|(_, p)| (p.ids.as_slice(), &p.params))
            .collect();
        let n = engine.model.num_layers();
        let results = generate_dense_batch(&engine.model, &requests, |r, token| {
            first_tokens[r].get_or_insert_with(Instant::now);
            texts[r].push(token, n)
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
