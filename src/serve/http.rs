//! HTTP routes: parse and check a body, queue it for the engine worker, answer whole or as SSE.
//!
//! Every failure is an OpenAI-style JSON error; a full queue is a 503 at once (the client
//! retries later) rather than an unbounded wait.

use super::error::ApiError;
use super::metrics::Metrics;
use super::openai::{self, Endpoint, Input, RequestRules};
use super::reply::ReplyHead;
use super::template::ChatTemplate;
use super::worker::{Event, Job, Prompt};
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde_json::json;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What the handlers share.
pub struct Shared {
    pub queue: mpsc::Sender<Job>,
    pub rules: RequestRules,
    pub template: ChatTemplate,
    pub metrics: Arc<Metrics>,
    /// Unix time the server started (the model's `created`).
    pub started: u64,
    pub next_id: AtomicU64,
    /// For `/tokenize` and `/detokenize`, answered here without the engine worker.
    pub tokenizer: tokenizers::Tokenizer,
    /// The longest prompt plus answer, in tokens (the model's context).
    pub max_model_len: usize,
}

pub(super) type App = Arc<Shared>;

/// How large a request body may be and how long its client may take to send it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
}

pub fn router(app: App, body: BodyLimits) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completion))
        .route("/v1/models", get(models))
        .route("/tokenize", post(super::tokenize::tokenize))
        .route("/detokenize", post(super::tokenize::detokenize))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        // `buffer_body` enforces the size limit (and the time limit) for every route; the
        // handlers' `Bytes` then only take the buffered body, so axum's own 2 MB default is off.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(body, buffer_body))
        .with_state(app)
}

/// Read the whole body, within the size and time limits, before any handler runs: a client
/// that trickles its body (slow-loris) gets 408 and its connection back instead of holding it.
async fn buffer_body(State(limits): State<BodyLimits>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let read = read_body(body, limits.max_bytes);
    let bytes = match tokio::time::timeout(limits.timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(BodyError::TooLarge)) => {
            return ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                ..ApiError::bad_request(format!(
                    "the request body is larger than {} bytes (scheduler.max_body_bytes)",
                    limits.max_bytes
                ))
            }
            .into_response()
        }
        Ok(Err(BodyError::Unreadable)) => {
            return ApiError::bad_request("the request body could not be read").into_response()
        }
        Err(_) => {
            return ApiError {
                status: StatusCode::REQUEST_TIMEOUT,
                ..ApiError::bad_request(format!(
                    "the request body did not arrive within {} s (scheduler.body_timeout_secs)",
                    limits.timeout.as_secs_f64()
                ))
            }
            .into_response()
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

enum BodyError {
    TooLarge,
    Unreadable,
}

/// The body if it holds at most `max` bytes. A larger one is still read (and dropped) up to a
/// few times `max`, so the client has finished sending when the 413 goes out: closing on a
/// client mid-upload resets the connection, and the client never sees the answer.
async fn read_body(mut body: Body, max: usize) -> Result<Bytes, BodyError> {
    let drain_up_to = max.saturating_mul(4).max(1 << 20);
    if HttpBody::size_hint(&body).lower() > drain_up_to as u64 {
        return Err(BodyError::TooLarge);
    }
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Unreadable)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        seen = seen.saturating_add(data.len());
        if seen <= max {
            kept.extend_from_slice(&data);
        } else if seen > drain_up_to {
            return Err(BodyError::TooLarge);
        }
    }
    match seen <= max {
        true => Ok(Bytes::from(kept)),
        false => Err(BodyError::TooLarge),
    }
}

async fn chat(State(app): State<App>, body: Bytes) -> Response {
    let response = complete(&app, Endpoint::Chat, body).await;
    counted(&app, "/v1/chat/completions", response)
}

async fn completion(State(app): State<App>, body: Bytes) -> Response {
    let response = complete(&app, Endpoint::Completion, body).await;
    counted(&app, "/v1/completions", response)
}

fn counted(app: &Shared, endpoint: &'static str, response: Result<Response, ApiError>) -> Response {
    let response = response.unwrap_or_else(IntoResponse::into_response);
    app.metrics.response(endpoint, response.status().as_u16());
    response
}

async fn complete(app: &Shared, endpoint: Endpoint, bytes: Bytes) -> Result<Response, ApiError> {
    let request = openai::parse(&bytes, endpoint, &app.rules)?;
    let prompt = match request.input {
        Input::Messages(messages) => Prompt::Text(render(app, &messages)?),
        Input::Prompt(prompt) => Prompt::Text(prompt),
        Input::Tokens(ids) => Prompt::Tokens(ids),
    };
    let (events, mut answers) = mpsc::unbounded_channel();
    let job = Job {
        prompt,
        max_tokens: request.max_tokens,
        sampling: request.sampling,
        ignore_eos: request.ignore_eos,
        stop: request.stop,
        stop_token_ids: Vec::new(),
        policy: request.policy,
        mode: request.mode,
        kv_fill: request.kv_fill,
        logprobs: request.options.logprobs,
        echo: request.options.echo,
        events,
    };
    app.queue.try_send(job).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => ApiError::overloaded(format!(
            "the request queue is full ({} waiting); retry later",
            app.queue.max_capacity()
        )),
        mpsc::error::TrySendError::Closed(_) => ApiError::overloaded("the engine has stopped"),
    })?;
    // Wait until the worker has checked the prompt, so a bad one is an HTTP error even when
    // streaming was asked for.
    match answers.recv().await {
        Some(Event::Started { .. }) => {}
        Some(Event::Failed(e)) => return Err(e),
        _ => return Err(ApiError::internal("the engine dropped the request")),
    }
    let n = app.next_id.fetch_add(1, Ordering::Relaxed);
    let head = ReplyHead {
        endpoint,
        id: match endpoint {
            Endpoint::Chat => format!("chatcmpl-{}-{n}", app.started),
            Endpoint::Completion => format!("cmpl-{}-{n}", app.started),
        },
        created: unix_now(),
        model: app.rules.model_name.clone(),
    };
    if request.stream {
        let include_usage = request.options.include_usage;
        return Ok(stream(head, answers, include_usage).into_response());
    }
    loop {
        match answers.recv().await {
            Some(Event::Text(_)) | Some(Event::Started { .. }) => {}
            Some(Event::Done(summary)) => return Ok(Json(head.complete(&summary)).into_response()),
            Some(Event::Failed(e)) => return Err(e),
            None => return Err(ApiError::internal("the engine dropped the request")),
        }
    }
}

/// The chat prompt the model's template makes of `messages`.
pub(super) fn render(app: &Shared, messages: &[openai::ChatMessage]) -> Result<String, ApiError> {
    app.template
        .render(messages)
        .map_err(|e| ApiError::bad_request(format!("{e:#}")).with_param("messages"))
}

/// Server-sent events: a chunk per piece of text, the last chunk with usage and `adainfer`,
/// (with `include_usage`, a usage chunk with no choices), then `data: [DONE]`. Dropping the
/// stream (client gone) closes `answers`, which stops the worker.
fn stream(
    head: ReplyHead,
    answers: mpsc::UnboundedReceiver<Event>,
    include_usage: bool,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    enum Phase {
        Running(mpsc::UnboundedReceiver<Event>),
        /// The events left to send, in reverse order.
        Tail(Vec<SseEvent>),
    }
    let data = |value: serde_json::Value| SseEvent::default().data(value.to_string());
    let start = (head, Phase::Running(answers), true);
    let events = futures_util::stream::unfold(start, move |(head, phase, first)| async move {
        let mut answers = match phase {
            Phase::Running(answers) => answers,
            Phase::Tail(mut tail) => {
                let event = tail.pop()?;
                return Some((Ok(event), (head, Phase::Tail(tail), first)));
            }
        };
        loop {
            let mut tail = match answers.recv().await? {
                Event::Text(text) => {
                    let chunk = Ok(data(head.delta(&text, first)));
                    return Some((chunk, (head, Phase::Running(answers), false)));
                }
                Event::Started { .. } => continue,
                Event::Done(summary) => {
                    let mut tail = vec![data(head.last(&summary))];
                    if include_usage {
                        tail.push(data(head.usage_chunk(&summary)));
                    }
                    tail
                }
                Event::Failed(e) => vec![data(e.body())],
            };
            tail.push(SseEvent::default().data("[DONE]"));
            tail.reverse();
            let event = tail.pop()?;
            return Some((Ok(event), (head, Phase::Tail(tail), first)));
        }
    });
    Sse::new(events)
}

async fn models(State(app): State<App>) -> Response {
    Json(json!({
        "object": "list",
        "data": [{
            "id": app.rules.model_name,
            "object": "model",
            "created": app.started,
            "owned_by": "adainfer",
        }],
    }))
    .into_response()
}

async fn health(State(app): State<App>) -> Response {
    if app.queue.is_closed() {
        ApiError::overloaded("the engine has stopped").into_response()
    } else {
        Json(json!({"status": "ok"})).into_response()
    }
}

async fn metrics(State(app): State<App>) -> Response {
    let capacity = app.queue.max_capacity();
    let depth = capacity - app.queue.capacity();
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        app.metrics.render(depth, capacity),
    )
        .into_response()
}

async fn not_found() -> Response {
    ApiError::not_found(
        "no such endpoint: try /v1/chat/completions, /v1/completions, /v1/models, /tokenize, \
         /detokenize, /health or /metrics",
    )
    .into_response()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::SamplingParams;

    fn shared(queue: mpsc::Sender<Job>) -> Shared {
        Shared {
            queue,
            rules: RequestRules {
                model_name: "tiny".into(),
                max_tokens: 8,
                default_max_tokens: 4,
                sampling: SamplingParams::greedy(),
                vocab_size: 10,
            },
            template: ChatTemplate::plain(),
            metrics: Default::default(),
            started: 0,
            next_id: Default::default(),
            tokenizer: tokenizers::Tokenizer::new(tokenizers::models::bpe::BPE::default()),
            max_model_len: 16,
        }
    }

    #[tokio::test]
    async fn a_full_queue_is_a_503_and_a_stopped_engine_too() {
        let (queue, mut jobs) = mpsc::channel(1);
        let app = Arc::new(shared(queue));
        let body = || Bytes::from_static(br#"{"prompt": "hi"}"#);
        // Nobody serves the queue: the first request waits in it, the second finds it full.
        let first = app.clone();
        let waiting =
            tokio::spawn(async move { complete(&first, Endpoint::Completion, body()).await });
        while app.queue.capacity() > 0 {
            tokio::task::yield_now().await;
        }
        let e = complete(&app, Endpoint::Completion, body())
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.message.contains("queue is full"), "{e}");
        // The queued job is answered with a failure: the waiting request gets that error.
        let job = jobs.recv().await.unwrap();
        job.events
            .send(Event::Failed(ApiError::bad_request("no")))
            .unwrap();
        assert_eq!(waiting.await.unwrap().unwrap_err().message, "no");
        drop(jobs);
        let e = complete(&app, Endpoint::Completion, body())
            .await
            .unwrap_err();
        assert!(e.message.contains("stopped"), "{e}");
    }
}
