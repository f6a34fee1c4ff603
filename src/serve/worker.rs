//! The engine worker: one thread owns the model and answers queued jobs one at a time.
//!
//! candle on CPU already spreads a pass over every core, so a single worker is the right
//! shape there. Each job carries its own event channel; when the client goes away the channel
//! closes, and the worker stops that generation at the next token and moves on.

use super::error::ApiError;
use super::metrics::{Metrics, PassRecord};
use super::policy::HookFactory;
use crate::engine::generate::{check_request, generate_dense};
use crate::engine::{FinishReason, GenerationParams, Outputs, Sampler, SamplingParams};
use crate::hook::LayerHook;
use crate::Engine;
use anyhow::{anyhow, Result};
use std::sync::Arc;
use tokio::sync::mpsc;

/// A request the HTTP side has checked, waiting for the engine.
pub struct Job {
    pub prompt: String,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Generate `max_tokens` whatever the model says (no stop on end-of-text).
    pub ignore_eos: bool,
    /// `None`: the server's default policy.
    pub policy: Option<String>,
    pub events: mpsc::UnboundedSender<Event>,
}

/// What the worker tells the request's handler, in this order: `Started`, `Token`s, `Done`;
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
    pub num_layers: usize,
    /// One per forward pass, the prompt pass first.
    pub passes: Vec<PassRecord>,
}

/// The client went away: stop generating.
#[derive(Debug)]
struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client went away")
    }
}

impl std::error::Error for Cancelled {}

pub struct Worker {
    pub engine: Engine,
    pub hooks: Box<dyn HookFactory>,
    pub max_prompt_tokens: usize,
    pub metrics: Arc<Metrics>,
}

impl Worker {
    /// Serve jobs until every sender of the queue is gone.
    pub fn spawn(self, mut queue: mpsc::Receiver<Job>) -> Result<std::thread::JoinHandle<()>> {
        let handle = std::thread::Builder::new()
            .name("adainfer-engine".into())
            .spawn(move || {
                while let Some(job) = queue.blocking_recv() {
                    self.answer(job);
                }
            })?;
        Ok(handle)
    }

    fn answer(&self, job: Job) {
        if job.events.is_closed() {
            self.metrics.cancelled();
            return;
        }
        // A panic in one request must not take the server down with it.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(&job)));
        let failure = match outcome {
            Ok(Ok(summary)) => {
                self.record(&summary);
                Event::Done(summary)
            }
            Ok(Err(e)) if e.downcast_ref::<Cancelled>().is_some() => {
                self.metrics.cancelled();
                return;
            }
            Ok(Err(e)) => Event::Failed(match e.downcast::<ApiError>() {
                Ok(api) => api,
                Err(e) => ApiError::internal(format!("{e:#}")),
            }),
            Err(_) => Event::Failed(ApiError::internal("the engine panicked on this request")),
        };
        // The client may be gone already; nothing left to clean up then.
        let _ = job.events.send(failure);
    }

    fn record(&self, s: &Summary) {
        self.metrics.generation(
            &s.policy,
            s.num_layers,
            s.prompt_tokens,
            s.completion_tokens,
            &s.passes,
        );
    }

    fn run(&self, job: &Job) -> Result<Summary> {
        let engine = &self.engine;
        let bad = |e: anyhow::Error| anyhow!(ApiError::bad_request(format!("{e:#}")));
        let ids = engine.encode(&job.prompt).map_err(bad)?;
        if ids.len() > self.max_prompt_tokens {
            return Err(anyhow!(ApiError::bad_request(format!(
                "the prompt has {} tokens; this server accepts at most {}",
                ids.len(),
                self.max_prompt_tokens
            ))
            .with_param("messages")));
        }
        check_request(&engine.model, &ids, job.max_tokens).map_err(bad)?;
        let policy = job
            .policy
            .clone()
            .unwrap_or_else(|| self.hooks.default_policy().to_string());
        let hook = self.hooks.make(engine, &policy).map_err(|e| {
            anyhow!(ApiError::bad_request(format!("{e:#}")).with_param("adainfer.policy"))
        })?;
        let started = Event::Started {
            prompt_tokens: ids.len(),
            policy: policy.clone(),
        };
        job.events.send(started).map_err(|_| Cancelled)?;
        let params = GenerationParams {
            max_tokens: job.max_tokens,
            sampling: job.sampling.clone(),
            stop_tokens: if job.ignore_eos {
                Vec::new()
            } else {
                engine.eos_token_ids.clone()
            },
        };
        let mut sink = TokenSink {
            engine,
            events: &job.events,
            tokens: Vec::new(),
            sent: String::new(),
        };
        let (finish_reason, passes) = match hook {
            None => generate(engine, &ids, &params, &mut sink)?,
            Some(hook) => generate_with_prompt_hook(engine, &ids, &params, hook, &mut sink)?,
        };
        let text = sink.finish()?;
        Ok(Summary {
            text,
            prompt_tokens: ids.len(),
            completion_tokens: sink.tokens.len(),
            finish_reason,
            policy,
            num_layers: engine.model.num_layers(),
            passes,
        })
    }
}

/// Dense generation (the library's own), with one full pass recorded per forward.
fn generate(
    engine: &Engine,
    ids: &[u32],
    params: &GenerationParams,
    sink: &mut TokenSink,
) -> Result<(FinishReason, Vec<PassRecord>)> {
    let g = generate_dense(&engine.model, ids, params, |t| sink.push(t))?;
    let layers = engine.model.num_layers();
    // A pass per token, plus the one that produced the stop token.
    let count = g.tokens.len() + usize::from(g.finish_reason == FinishReason::Stop);
    let full = PassRecord {
        exit_layer: layers,
        layers_run: layers,
    };
    Ok((g.finish_reason, vec![full; count]))
}

/// The hook decides the prompt pass (classification-style use); later tokens decode densely.
///
/// Interim until early exit during decode lands in the engine: the prompt pass leaves KV holes
/// above the exit layer, so the dense continuation re-reads the prompt from a fresh cache.
fn generate_with_prompt_hook(
    engine: &Engine,
    ids: &[u32],
    params: &GenerationParams,
    mut hook: Box<dyn LayerHook>,
    sink: &mut TokenSink,
) -> Result<(FinishReason, Vec<PassRecord>)> {
    let model = &engine.model;
    let mut cache = model.new_cache();
    let out = model.forward(ids, &mut cache, Some(hook.as_mut()), Outputs::LastToken)?;
    let layers = model.num_layers();
    let mut passes = vec![PassRecord {
        exit_layer: out.exit.as_ref().map_or(layers, |e| e.layer),
        layers_run: out.layers_run,
    }];
    let first = Sampler::new(params.sampling.clone())?.sample(&out.last_logits()?);
    if params.stop_tokens.contains(&first) {
        return Ok((FinishReason::Stop, passes));
    }
    sink.push(first)?;
    if params.max_tokens == 1 {
        return Ok((FinishReason::Length, passes));
    }
    let mut prompt = ids.to_vec();
    prompt.push(first);
    let rest = GenerationParams {
        max_tokens: params.max_tokens - 1,
        ..params.clone()
    };
    let (finish, dense) = generate(engine, &prompt, &rest, sink)?;
    passes.extend(dense);
    Ok((finish, passes))
}

/// Collects tokens and sends the text they add, never half a UTF-8 character.
struct TokenSink<'a> {
    engine: &'a Engine,
    events: &'a mpsc::UnboundedSender<Event>,
    tokens: Vec<u32>,
    /// Text already sent.
    sent: String,
}

impl TokenSink<'_> {
    fn push(&mut self, token: u32) -> Result<()> {
        if self.events.is_closed() {
            return Err(Cancelled.into());
        }
        self.tokens.push(token);
        let text = self.engine.decode(&self.tokens)?;
        // A byte-level token may end inside a character (decoded as U+FFFD): wait for the rest.
        if !text.ends_with('\u{FFFD}') {
            self.send_new(text)?;
        }
        Ok(())
    }

    /// The whole text (as the library decodes it), after sending whatever is still unsent.
    fn finish(&mut self) -> Result<String> {
        let text = self.engine.decode(&self.tokens)?;
        self.send_new(text.clone())?;
        Ok(text)
    }

    fn send_new(&mut self, text: String) -> Result<()> {
        if text.len() > self.sent.len() && text.starts_with(&self.sent) {
            let delta = text[self.sent.len()..].to_string();
            self.sent = text;
            self.events
                .send(Event::Text(delta))
                .map_err(|_| Cancelled)?;
        }
        Ok(())
    }
}
