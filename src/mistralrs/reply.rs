//! Building the `mistralrs_core::Response` values a mistral.rs app expects: chat or completion,
//! whole or streamed, and the error variants.

use crate::engine::generate::FinishReason;
use crate::serve::worker::Summary;
use mistralrs_core::{
    ChatCompletionChunkResponse, ChatCompletionResponse, Choice, ChunkChoice, CompletionChoice,
    CompletionChunkChoice, CompletionChunkResponse, CompletionResponse, Delta, Response,
    ResponseMessage, Usage, SYSTEM_FINGERPRINT,
};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::Sender;

/// The receiving app dropped its end: stop generating, nobody is listening.
#[derive(Debug)]
pub struct Disconnected;

fn now() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn reason(r: FinishReason) -> String {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
    .to_string()
}

/// mistral.rs's usage block, from the worker's summary of one generation.
pub fn usage(s: &Summary) -> Usage {
    let (p, c) = (s.prompt_tokens, s.completion_tokens);
    let rate = |n: usize, secs: f64| {
        if secs > 0.0 {
            (n as f64 / secs) as f32
        } else {
            0.0
        }
    };
    let total = s.prefill_seconds + s.decode_seconds;
    Usage {
        completion_tokens: c,
        prompt_tokens: p,
        total_tokens: p + c,
        avg_tok_per_sec: rate(p + c, total),
        avg_prompt_tok_per_sec: rate(p, s.prefill_seconds),
        avg_compl_tok_per_sec: rate(c, s.decode_seconds),
        total_time_sec: total as f32,
        total_prompt_time_sec: s.prefill_seconds as f32,
        total_completion_time_sec: s.decode_seconds as f32,
    }
}

/// Answers one request on its channel, shaped as chat or completion.
pub struct Replier {
    pub sender: Sender<Response>,
    pub chat: bool,
    pub id: String,
    pub model: String,
}

impl Replier {
    pub async fn send(&self, r: Response) -> Result<(), Disconnected> {
        self.sender.send(r).await.map_err(|_| Disconnected)
    }

    pub async fn validation_error(&self, message: String) {
        let e: Box<dyn std::error::Error + Send + Sync> = message.into();
        // A client that already left needs no error either.
        let _ = self.send(Response::ValidationError(e)).await;
    }

    pub async fn internal_error(&self, message: String) {
        let e: Box<dyn std::error::Error + Send + Sync> = message.into();
        let _ = self.send(Response::InternalError(e)).await;
    }

    /// One streamed piece of text; the last one carries `finish` (and, for chat, usage).
    pub async fn chunk(
        &self,
        text: String,
        finish: Option<FinishReason>,
        usage: Option<Usage>,
    ) -> Result<(), Disconnected> {
        let created = now().as_millis();
        let finish_reason = finish.map(reason);
        let response = if self.chat {
            Response::Chunk(ChatCompletionChunkResponse {
                id: self.id.clone(),
                choices: vec![ChunkChoice {
                    finish_reason,
                    index: 0,
                    delta: Delta {
                        content: Some(text),
                        role: "assistant".into(),
                        tool_calls: None,
                        reasoning_content: None,
                    },
                    logprobs: None,
                }],
                created,
                model: self.model.clone(),
                system_fingerprint: SYSTEM_FINGERPRINT.into(),
                object: "chat.completion.chunk".into(),
                usage,
            })
        } else {
            Response::CompletionChunk(CompletionChunkResponse {
                id: self.id.clone(),
                choices: vec![CompletionChunkChoice {
                    text,
                    index: 0,
                    logprobs: None,
                    finish_reason,
                }],
                created,
                model: self.model.clone(),
                system_fingerprint: SYSTEM_FINGERPRINT.into(),
                object: "text_completion".into(),
            })
        };
        self.send(response).await
    }

    /// The whole answer of a non-streaming request (`text` includes any echoed prompt).
    pub async fn done(&self, text: String, s: &Summary) -> Result<(), Disconnected> {
        let (finish, usage) = (reason(s.finish_reason), usage(s));
        let created = now().as_secs();
        let (id, model, fingerprint) = (self.id.clone(), self.model.clone(), SYSTEM_FINGERPRINT);
        let response = if self.chat {
            Response::Done(ChatCompletionResponse {
                id,
                choices: vec![Choice {
                    finish_reason: finish,
                    index: 0,
                    message: ResponseMessage {
                        content: Some(text),
                        role: "assistant".into(),
                        tool_calls: None,
                        reasoning_content: None,
                    },
                    logprobs: None,
                }],
                created,
                model,
                system_fingerprint: fingerprint.into(),
                object: "chat.completion".into(),
                usage,
            })
        } else {
            Response::CompletionDone(CompletionResponse {
                id,
                choices: vec![CompletionChoice {
                    finish_reason: finish,
                    index: 0,
                    text,
                    logprobs: None,
                }],
                created,
                model,
                system_fingerprint: fingerprint.into(),
                object: "text_completion".into(),
                usage,
            })
        };
        self.send(response).await
    }
}
