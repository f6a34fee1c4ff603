//! A mistral.rs-compatible front for our engine: the app keeps building
//! `mistralrs_core::Request::Normal` values and reading `Response`s from the request's channel;
//! only the sender it hands them to changes.
//!
//! ```text
//! app ──Request──▶ front (checks, tokenizes, renders chat) ──Job──▶ engine worker (serve::worker)
//!  ▲                      │ one relay task per request                     │
//!  └──── Response ◀───────┴──────────────── Started, Text…, Done | Failed ◀┘
//! ```
//! The engine side is the server's worker, so the front generates, exits, fills the KV cache
//! and counts metrics exactly as `adainfer serve` does. Everything a request asks for that we
//! do not implement is answered with `Response::ValidationError` naming the feature; a failure
//! inside generation (a panicking plugin included) becomes `Response::InternalError`, and the
//! front keeps serving. It stops on `Request::Terminate` or when every sender is dropped, after
//! answering the requests it took.

use super::reply::{usage, Disconnected, Replier};
use super::validate::{accept, chat_messages, PromptSource};
use crate::engine::modes::ModeSpec;
use crate::serve::config::AdaptiveSection;
use crate::serve::metrics::Metrics;
use crate::serve::template::ChatTemplate;
use crate::serve::worker::{Event, Job, Prompt, Worker};
use crate::serve::{hooks_for, DenseOnly, EngineConfig, HookFactory};
use crate::Engine;
use anyhow::{anyhow, bail, Context, Result};
use mistralrs_core::{NormalRequest, Request, RequestMessage, TokenizationRequest};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc::{channel, unbounded_channel, Receiver, Sender, UnboundedReceiver};
use tokio::task::JoinSet;

pub struct FrontOptions {
    /// Model name put in responses.
    pub model_name: String,
    /// How requests generate when the hook factory gives them an exit policy.
    pub mode: ModeSpec,
    /// Requests beyond this many waiting make the app's `send` wait (back-pressure).
    pub queue: usize,
    /// Dense requests waiting together are decoded together, up to this many.
    pub max_batch: usize,
    /// A Jinja chat template file; `None`: the model's own (`tokenizer_config.json`), else the
    /// plain `role: content` transcript.
    pub chat_template: Option<PathBuf>,
}

impl Default for FrontOptions {
    fn default() -> Self {
        Self {
            model_name: "adainfer".into(),
            mode: AdaptiveSection::default().mode_spec(),
            queue: 64,
            max_batch: 8,
            chat_template: None,
        }
    }
}

/// The engine handle: hand [`AdaInferFront::sender`] to code that sends mistral.rs requests.
pub struct AdaInferFront {
    sender: Sender<Request>,
    metrics: Arc<Metrics>,
    /// The engine's queue, read for the queue gauge only.
    jobs: Sender<Job>,
}

impl AdaInferFront {
    /// The engine an engine config describes, dense or adaptive as its `[adaptive]` section
    /// says: the same file and switch as `adainfer serve --config`.
    pub fn from_config(config: &EngineConfig) -> Result<Self> {
        config.validate()?;
        let engine = config.load_engine()?;
        let hooks = hooks_for(config, &engine)?;
        let options = FrontOptions {
            model_name: config.model_name(),
            mode: config.adaptive.mode_spec(),
            queue: config.scheduler.queue_capacity,
            max_batch: config.scheduler.max_batch,
            chat_template: config.model.chat_template.clone(),
        };
        Self::spawn(engine, hooks, options)
    }

    /// The dense engine behind a mistral.rs front.
    pub fn dense(engine: Engine) -> Result<Self> {
        Self::spawn(engine, Box::new(DenseOnly), FrontOptions::default())
    }

    /// Start the engine worker (owning `engine`) and the front thread that feeds it.
    pub fn spawn(
        engine: Engine,
        hooks: Box<dyn HookFactory>,
        options: FrontOptions,
    ) -> Result<Self> {
        if options.queue == 0 {
            bail!("the request queue needs room for at least one request");
        }
        let template = ChatTemplate::for_model(&engine.chat, options.chat_template.as_deref())?;
        let context = engine.config().max_position_embeddings;
        let gate = Gate {
            tokenizer: engine.tokenizer.clone(),
            context,
            template,
            model_name: options.model_name,
        };
        let metrics = Arc::new(Metrics::default());
        let (jobs, queue) = channel(options.queue);
        Worker {
            engine,
            hooks,
            mode: options.mode,
            max_prompt_tokens: context,
            max_batch: options.max_batch.max(1),
            metrics: metrics.clone(),
        }
        .spawn(queue)?;
        let (sender, requests) = channel(options.queue);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .context("cannot start the front's tokio runtime")?;
        std::thread::Builder::new()
            .name("adainfer-front".into())
            .spawn({
                let jobs = jobs.clone();
                move || runtime.block_on(gate.serve(requests, jobs))
            })
            .map_err(|e| anyhow!("cannot start the front's thread: {e}"))?;
        Ok(Self {
            sender,
            metrics,
            jobs,
        })
    }

    /// Where requests go: the same type as `MistralRs::get_sender` returns.
    pub fn sender(&self) -> Sender<Request> {
        self.sender.clone()
    }

    /// Requests, tokens, exit layers and layers saved so far, in Prometheus text (the
    /// server's `/metrics`).
    pub fn metrics(&self) -> String {
        let capacity = self.jobs.max_capacity();
        self.metrics
            .render(capacity - self.jobs.capacity(), capacity)
    }
}

/// The front thread: turns requests into jobs and answers them.
struct Gate {
    tokenizer: tokenizers::Tokenizer,
    context: usize,
    template: ChatTemplate,
    model_name: String,
}

impl Gate {
    async fn serve(self, mut requests: Receiver<Request>, jobs: Sender<Job>) {
        let mut relays = JoinSet::new();
        while let Some(request) = requests.recv().await {
            while relays.try_join_next().is_some() {}
            match request {
                Request::Normal(req) => {
                    if let Some(relay) = self.normal(*req, &jobs).await {
                        relays.spawn(relay);
                    }
                }
                Request::Tokenize(req) => {
                    let _ = req.response.send(self.tokenize(&req)).await;
                }
                Request::Detokenize(req) => {
                    let text = crate::engine::decode(&self.tokenizer, &req.tokens);
                    let _ = req.response.send(text).await;
                }
                Request::Terminate => break,
                // Neither has a channel to answer on: in-situ quantization does not apply to
                // our f32/bf16 engine, and a client that goes away stops its own generation.
                Request::ReIsq(_) | Request::TerminateAllSeqsNextStep => {}
            }
        }
        // Requests already taken are answered before the front goes away.
        drop(jobs);
        while relays.join_next().await.is_some() {}
    }

    /// Hand one request to the engine; the returned task relays its answer.
    async fn normal(
        &self,
        req: NormalRequest,
        jobs: &Sender<Job>,
    ) -> Option<impl std::future::Future<Output = ()>> {
        let replier = Replier {
            sender: req.response.clone(),
            chat: matches!(req.messages, RequestMessage::Chat { .. }),
            id: req.id.to_string(),
            model: self.model_name.clone(),
        };
        let (job, events, echo) = match self.job(&req) {
            Ok(j) => j,
            Err(message) => {
                replier.validation_error(message).await;
                return None;
            }
        };
        if jobs.send(job).await.is_err() {
            replier
                .internal_error("the engine has stopped".into())
                .await;
            return None;
        }
        Some(relay(events, replier, echo, req.is_streaming))
    }

    /// The engine job for `req` with the channel its events come back on, and the text an
    /// echoed answer starts with; or why the request cannot run.
    fn job(&self, req: &NormalRequest) -> Result<(Job, UnboundedReceiver<Event>, String), String> {
        let a = accept(req).map_err(|u| u.to_string())?;
        let encode = |text: String| match crate::engine::encode(&self.tokenizer, &text) {
            Ok(ids) => Ok((ids, text)),
            Err(e) => Err(format!("{e:#}")),
        };
        let (mut ids, text) = match a.prompt {
            PromptSource::Tokens(ids) => (ids, String::new()),
            PromptSource::Text(text) => encode(text)?,
            PromptSource::Chat(m) => {
                encode(self.template.render(&m).map_err(|e| format!("{e:#}"))?)?
            }
        };
        // mistral.rs: no max_len means until the context is full.
        let max_tokens = a
            .max_tokens
            .unwrap_or_else(|| self.context.saturating_sub(ids.len()).max(1));
        // mistral.rs `truncate_sequence`: keep the prompt's end when the whole does not fit.
        if a.truncate && max_tokens < self.context && ids.len() + max_tokens > self.context {
            ids.drain(..ids.len() + max_tokens - self.context);
        }
        // The worker checks the rest (empty, too long, prompt or stop ids outside the vocabulary).
        let (events, answers) = unbounded_channel();
        let job = Job {
            prompt: Prompt::Tokens(ids),
            max_tokens,
            sampling: a.sampling,
            ignore_eos: false,
            stop: Vec::new(),
            stop_token_ids: a.stop_ids,
            policy: None,
            mode: None,
            kv_fill: None,
            // The front echoes the text itself and refuses logprobs (see `validate`).
            logprobs: None,
            echo: false,
            events,
        };
        let echo = if a.echo { text } else { String::new() };
        Ok((job, answers, echo))
    }

    fn tokenize(&self, req: &TokenizationRequest) -> anyhow::Result<Vec<u32>> {
        if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            bail!("adainfer does not support tools in tokenization requests");
        }
        let text = match (req.text.as_ref().right(), req.text.as_ref().left()) {
            (Some(text), _) => text.clone(),
            (None, Some(messages)) => self.template.render(&chat_messages(messages)?)?,
            (None, None) => unreachable!("Either is left or right"),
        };
        let ids = self
            .tokenizer
            .encode(text, req.add_special_tokens)
            .map_err(|e| anyhow!("cannot tokenize: {e}"))?;
        Ok(ids.get_ids().to_vec())
    }
}

/// Turn the worker's events for one request into the `Response`s the app reads.
async fn relay(
    mut events: UnboundedReceiver<Event>,
    replier: Replier,
    echo: String,
    streaming: bool,
) {
    // On `Disconnected` the app stopped listening: dropping `events` stops the generation.
    let _ = relay_events(&mut events, &replier, echo, streaming).await;
}

async fn relay_events(
    events: &mut UnboundedReceiver<Event>,
    replier: &Replier,
    mut echo: String,
    streaming: bool,
) -> Result<(), Disconnected> {
    while let Some(event) = events.recv().await {
        match event {
            Event::Started { .. } if streaming && !echo.is_empty() => {
                replier.chunk(std::mem::take(&mut echo), None, None).await?;
            }
            Event::Started { .. } => {}
            Event::Text(delta) if streaming => replier.chunk(delta, None, None).await?,
            Event::Text(_) => {}
            Event::Done(summary) if streaming => {
                let usage = replier.chat.then(|| usage(&summary));
                return replier
                    .chunk(String::new(), Some(summary.finish_reason), usage)
                    .await;
            }
            Event::Done(summary) => return replier.done(echo + &summary.text, &summary).await,
            Event::Failed(e) if e.status.is_client_error() => {
                replier.validation_error(e.message).await;
                return Ok(());
            }
            Event::Failed(e) => {
                replier.internal_error(e.message).await;
                return Ok(());
            }
        }
    }
    replier
        .internal_error("the engine stopped before answering".into())
        .await;
    Ok(())
}
