//! The engine worker: one thread owns the model and answers queued jobs one at a time.
//!
//! candle on CPU already spreads a pass over every core, so a single worker is the right
//! shape there. Each job carries its own event channel; when the client goes away the channel
//! closes, and the worker stops that generation at the next token and moves on.

use super::error::ApiError;
use super::logprobs::{self, TokenLogprob};
use super::metrics::Metrics;
use super::policy::{HookFactory, PlanWatch, DENSE};
use super::text_stream::{Cancelled, StopHit, TextStream};
use crate::engine::generate::check_request;
use crate::engine::kv_fill::KvFill;
use crate::engine::model::check_vocabulary;
use crate::engine::modes::{generate_mode, Mode, ModeSpec};
use crate::engine::threads::in_pool;
use crate::engine::StepLogprobs;
use crate::engine::{FinishReason, GenerationParams, LogprobLog, SamplingParams};
use crate::hook::LayerHook;
use crate::Engine;
use anyhow::{anyhow, Result};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// What the model continues: text the worker tokenizes, or token ids as they are.
#[derive(Debug, Clone)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
}

/// A request a front (HTTP, or mistral.rs requests) has checked, waiting for the engine.
pub struct Job {
    pub prompt: Prompt,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Generate `max_tokens` whatever the model says (no stop on end-of-text).
    pub ignore_eos: bool,
    /// Stop strings: the answer ends before the first one generated.
    pub stop: Vec<String>,
    /// Token ids that end the answer like eos does (not part of it).
    pub stop_token_ids: Vec<u32>,
    /// `None`: the server's default policy.
    pub policy: Option<String>,
    /// `None`: the server's mode for requests with an exit policy.
    pub mode: Option<Mode>,
    /// `None`: the server's KV fill for early exit.
    pub kv_fill: Option<KvFill>,
    /// Log-probabilities of each token with this many alternatives; `None`: none.
    pub logprobs: Option<usize>,
    /// The answer starts with the prompt (scored too, with `logprobs`). With `max_tokens` 0
    /// the prompt is all there is.
    pub echo: bool,
    pub events: mpsc::UnboundedSender<Event>,
}

/// What the worker tells the request's handler, in this order: `Started`, `Text`s, `Done`;
/// or `Failed` instead of `Started` (bad prompt, unknown policy) or after it (engine error).
#[derive(Debug)]
pub enum Event {
    Started {
        prompt_tokens: usize,
        policy: String,
    },
    /// Text added since the last `Text` (a token's worth, or more when a character spans tokens).
    Text(String),
    Done(Summary),
    Failed(ApiError),
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub finish_reason: FinishReason,
    pub policy: String,
    /// `dense`, `early_exit/recompute`, `self_speculative/k=4`, …
    pub mode: String,
    pub num_layers: usize,
    /// For each generated token, the blocks run by the pass whose logits chose it.
    pub depths: Vec<usize>,
    /// From the start of the request to its first token (prefill), and from there to the end.
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    /// With `echo`: the prompt's text, which the answer starts with.
    pub echo: Option<String>,
    /// With `logprobs`: the echoed prompt's tokens (first without a logprob), then the answer's.
    pub logprobs: Option<Vec<TokenLogprob>>,
}

pub struct Worker {
    pub engine: Engine,
    pub hooks: Box<dyn HookFactory>,
    /// How requests with an exit policy generate (a request may pick another mode).
    pub mode: ModeSpec,
    pub max_prompt_tokens: usize,
    /// Dense requests waiting together are decoded together, up to this many (1: no batching).
    pub max_batch: usize,
    pub metrics: Arc<Metrics>,
}

/// A job checked and announced (`Started` sent), ready to generate.
pub(super) struct Prepared {
    pub ids: Vec<u32>,
    /// `None`: dense, exactly the library's dense generation.
    pub hook: Option<Box<dyn LayerHook>>,
    pub policy: String,
    pub spec: ModeSpec,
    pub params: GenerationParams,
    pub start: Instant,
    /// With `echo` and `logprobs`: each prompt token's step (the first has none) and the
    /// blocks the scoring pass ran.
    pub prompt_scores: Option<(Vec<Option<StepLogprobs>>, usize)>,
    pub echo: Option<String>,
}

impl Worker {
    /// Serve jobs until every sender of the queue is gone. Consecutive dense jobs in the queue
    /// are answered as one batch (see `serve::batch`); any other job alone, in queue order.
    pub fn spawn(self, queue: mpsc::Receiver<Job>) -> Result<std::thread::JoinHandle<()>> {
        let handle = std::thread::Builder::new()
            .name("adainfer-engine".into())
            .spawn(move || self.serve_queue(queue))?;
        Ok(handle)
    }

    /// Answer jobs in queue order; consecutive jobs with the same [`Worker::batch_key`] run as
    /// one batch.
    fn serve_queue(self, mut queue: mpsc::Receiver<Job>) {
        let mut held = None;
        while let Some(job) = held.take().or_else(|| queue.blocking_recv()) {
            let Some(key) = self.batch_key(&job) else {
                in_pool(|| self.answer(job));
                continue;
            };
            let mut batch = vec![job];
            while batch.len() < self.max_batch {
                match queue.try_recv() {
                    Ok(next) if self.batch_key(&next).as_ref() == Some(&key) => batch.push(next),
                    Ok(next) => {
                        held = Some(next);
                        break;
                    }
                    Err(_) => break,
                }
            }
            // The work itself runs on the engine's pool (see `engine::threads`); waiting for
            // the queue does not hold a pool thread.
            in_pool(|| match batch.len() {
                1 => batch.into_iter().for_each(|job| self.answer(job)),
                _ => self.answer_batch(batch),
            });
        }
    }

    /// Jobs with the same key can share a batch: dense ones, and a static policy's run as early
    /// exit with `propagate` (the only mode that runs skip plans). `None`: the job runs alone.
    fn batch_key(&self, job: &Job) -> Option<String> {
        if job.echo {
            // Scoring the prompt is a pass of its own.
            return None;
        }
        let policy = job.policy.as_deref().unwrap_or(self.hooks.default_policy());
        let mode = job.mode.unwrap_or(self.mode.mode);
        if policy == DENSE || mode == Mode::Dense {
            return Some(DENSE.to_string());
        }
        let propagate = job.kv_fill.unwrap_or(self.mode.kv_fill) == KvFill::Propagate;
        (mode == Mode::EarlyExit && propagate && self.hooks.plans_only(&self.engine, policy))
            .then(|| policy.to_string())
    }

    fn answer(&self, job: Job) {
        if job.events.is_closed() {
            self.metrics.cancelled();
            return;
        }
        // A panic in one request must not take the server down with it.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(&job)));
        self.conclude(&job, outcome);
    }

    /// Count and send the last event of `job`: `Done`, `Failed`, or nothing if it was cancelled.
    pub(super) fn conclude(&self, job: &Job, outcome: std::thread::Result<Result<Summary>>) {
        let last = match outcome {
            Ok(Ok(s)) => {
                let m = &self.metrics;
                m.generation(&s.policy, &s.mode, s.num_layers, s.prompt_tokens, &s.depths);
                Event::Done(s)
            }
            Ok(Err(e)) if e.downcast_ref::<Cancelled>().is_some() => {
                self.metrics.cancelled();
                return;
            }
            Ok(Err(e)) => Event::Failed(match e.downcast::<ApiError>() {
                Ok(api) => api,
                Err(e) => ApiError::internal(format!("{e:#}")),
            }),
            Err(panic) => Event::Failed(ApiError::internal(format!(
                "the engine panicked on this request: {}",
                panic_message(panic.as_ref())
            ))),
        };
        // The client may be gone already; nothing left to clean up then.
        let _ = job.events.send(last);
    }

    /// Tokenize and check `job`, pick its hook and mode, and tell the client it started.
    pub(super) fn prepare(&self, job: &Job) -> Result<Prepared> {
        let engine = &self.engine;
        let bad = |e: anyhow::Error| anyhow!(ApiError::bad_request(format!("{e:#}")));
        let start = Instant::now();
        let ids = match &job.prompt {
            Prompt::Text(text) => engine.encode(text).map_err(bad)?,
            Prompt::Tokens(ids) => ids.clone(),
        };
        if ids.len() > self.max_prompt_tokens {
            return Err(anyhow!(ApiError::bad_request(format!(
                "the prompt has {} tokens; this server accepts at most {}",
                ids.len(),
                self.max_prompt_tokens
            ))));
        }
        check_request(&engine.model, &ids, job.max_tokens).map_err(bad)?;
        check_vocabulary(
            "stop token",
            &job.stop_token_ids,
            engine.model.config.vocab_size,
        )
        .map_err(bad)?;
        let default = self.hooks.default_policy();
        let mut policy = job.policy.clone().unwrap_or_else(|| default.to_string());
        let mut hook = self.hooks.make(engine, &policy).map_err(|e| {
            anyhow!(ApiError::bad_request(format!("{e:#}")).with_param("adainfer.policy"))
        })?;
        let mut spec = self.mode;
        spec.mode = job.mode.unwrap_or(spec.mode);
        spec.kv_fill = job.kv_fill.unwrap_or(spec.kv_fill);
        if hook.is_none() || spec.mode == Mode::Dense {
            // Exactly the dense engine: no hook in any pass.
            (hook, policy, spec) = (None, DENSE.to_string(), ModeSpec::dense());
        }
        let started = Event::Started {
            prompt_tokens: ids.len(),
            policy: policy.clone(),
        };
        job.events.send(started).map_err(|_| Cancelled)?;
        let mut stop_tokens = match job.ignore_eos {
            true => Vec::new(),
            false => engine.eos_token_ids.clone(),
        };
        stop_tokens.extend(&job.stop_token_ids);
        let mut sampling = job.sampling.clone();
        sampling.rules.logprobs = job.logprobs.map(LogprobLog::new);
        if spec.mode == Mode::SelfSpeculative && !sampling.rules.is_plain() {
            return Err(anyhow!(ApiError::bad_request(
                "self_speculative decoding does not apply penalties, logit_bias or logprobs \
                 (its drafts are sampled, then rejected); use \"mode\": \"early_exit\" or \
                 the dense policy for them"
            )
            .with_param("adainfer.mode")));
        }
        let params = GenerationParams {
            max_tokens: job.max_tokens,
            sampling,
            stop_tokens,
        };
        let prompt_scores = match (job.echo, job.logprobs) {
            (true, Some(top)) => Some(self.score_prompt(&ids, &policy, &spec, top)?),
            _ => None,
        };
        let echo = match (job.echo, &job.prompt) {
            (false, _) => None,
            (true, Prompt::Text(text)) => Some(text.clone()),
            (true, Prompt::Tokens(ids)) => Some(engine.decode(ids)?),
        };
        Ok(Prepared {
            ids,
            hook,
            policy,
            spec,
            params,
            start,
            prompt_scores,
            echo,
        })
    }

    /// The prompt scored for `echo`: with early exit the request's policy (a fresh hook)
    /// decides where the scoring pass stops.
    fn score_prompt(
        &self,
        ids: &[u32],
        policy: &str,
        spec: &ModeSpec,
        top: usize,
    ) -> Result<(Vec<Option<StepLogprobs>>, usize)> {
        let mut hook = match spec.mode {
            Mode::EarlyExit => self.hooks.make(&self.engine, policy)?,
            _ => None,
        };
        let hook = hook.as_mut().map(|h| h.as_mut() as &mut dyn LayerHook);
        logprobs::score_prompt(&self.engine, ids, hook, top)
    }

    fn run(&self, job: &Job) -> Result<Summary> {
        let engine = &self.engine;
        let mut prepared = self.prepare(job)?;
        let mut hook = prepared.hook.take();
        let Prepared {
            ids,
            policy,
            spec,
            params,
            ..
        } = &prepared;
        let mut text = TextStream::new(engine, &job.events, &job.stop);
        if params.max_tokens == 0 {
            // Only the prompt was asked for (scored in `prepare`).
            return self.summary(&prepared, &mut text, FinishReason::Length, None);
        }
        let mut watch = hook.as_mut().map(|h| PlanWatch::new(h.as_mut()));
        let mut first_token = None;
        let generated = generate_mode(
            &engine.model,
            ids,
            params,
            spec,
            watch.as_mut().map(|w| w as &mut dyn LayerHook),
            |token, depth| {
                first_token.get_or_insert_with(Instant::now);
                text.push(token, depth)
            },
        );
        let finish_reason = match generated {
            Ok(g) => g.generation.finish_reason,
            Err(e) if e.downcast_ref::<StopHit>().is_some() => FinishReason::Stop,
            Err(e) if e.downcast_ref::<Cancelled>().is_some() => return Err(e),
            Err(e) if watch.is_some_and(|w| w.planned_skips) => {
                return Err(anyhow!(ApiError::bad_request(format!(
                    "policy {policy} skips layers up front, which mode {} cannot run: {e:#}. \
                     Ask for \"adainfer\": {{\"mode\": \"early_exit\", \"kv_fill\": \"propagate\"}}",
                    spec.label()
                ))
                .with_param("adainfer.policy")))
            }
            Err(e) => return Err(e),
        };
        self.summary(&prepared, &mut text, finish_reason, first_token)
    }

    /// The finished answer: flush the text and report tokens, depths and timings.
    pub(super) fn summary(
        &self,
        prepared: &Prepared,
        text: &mut TextStream,
        finish_reason: FinishReason,
        first_token: Option<Instant>,
    ) -> Result<Summary> {
        let answer = text.finish()?;
        let end = Instant::now();
        let first_token = first_token.unwrap_or(end);
        let start = prepared.start;
        let logprobs = match &prepared.params.sampling.rules.logprobs {
            None => None,
            Some(log) => Some(logprobs::tokens(
                &self.engine,
                &prepared.ids,
                prepared.prompt_scores.as_ref(),
                &text.tokens,
                &log.steps(),
                &text.depths,
                prepared.echo.as_deref(),
            )?),
        };
        Ok(Summary {
            text: answer,
            prompt_tokens: prepared.ids.len(),
            completion_tokens: text.tokens.len(),
            finish_reason,
            policy: prepared.policy.clone(),
            mode: prepared.spec.label(),
            num_layers: self.engine.model.num_layers(),
            depths: std::mem::take(&mut text.depths),
            prefill_seconds: (first_token - start).as_secs_f64(),
            decode_seconds: (end - first_token).as_secs_f64(),
            echo: prepared.echo.clone(),
            logprobs,
        })
    }
}

/// The text a panic was raised with (`panic!("…")` or `assert!` messages), if any.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}
