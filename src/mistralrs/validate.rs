//! What the front accepts from a `mistralrs_core::NormalRequest`, and a named refusal for the
//! rest: every feature our engine does not implement becomes a `ValidationError` saying which.

use crate::engine::SamplingParams;
pub use crate::serve::openai::ChatMessage;
use mistralrs_core::{Constraint, MessageContent, NormalRequest, RequestMessage, StopTokens};

#[derive(Debug, Clone, PartialEq)]
pub enum PromptSource {
    Text(String),
    Tokens(Vec<u32>),
    Chat(Vec<ChatMessage>),
}

/// A request the front will run.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub prompt: PromptSource,
    /// Completion requests with `echo_prompt`: the answer starts with the prompt text.
    pub echo: bool,
    /// `None`: until the context is full.
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stop_ids: Vec<u32>,
    pub streaming: bool,
    /// Drop the oldest prompt tokens when the prompt does not fit (mistral.rs `truncate_sequence`).
    pub truncate: bool,
}

impl Accepted {
    pub fn is_chat(&self) -> bool {
        matches!(self.prompt, PromptSource::Chat(_))
    }
}

/// The unsupported feature, named as a mistral.rs user knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "adainfer does not support {} in requests", self.0)
    }
}

impl std::error::Error for Unsupported {}

fn refuse<T>(feature: &str) -> Result<T, Unsupported> {
    Err(Unsupported(feature.to_string()))
}

fn text_of(content: &MessageContent, what: &str) -> Result<String, Unsupported> {
    match content {
        MessageContent::Left(text) => Ok(text.clone()),
        MessageContent::Right(parts) => {
            let mut text = String::new();
            for part in parts {
                let kind = part.get("type").and_then(|v| v.as_str()).unwrap_or("?");
                match (kind, part.get("text").and_then(|v| v.as_str())) {
                    ("text", Some(t)) => text.push_str(t),
                    _ => return refuse(&format!("{what} parts of type {kind:?} (only text)")),
                }
            }
            Ok(text)
        }
    }
}

/// Chat turns of a `RequestMessage::Chat` or a tokenization request.
pub fn chat_messages(
    messages: &[indexmap::IndexMap<String, MessageContent>],
) -> Result<Vec<ChatMessage>, Unsupported> {
    let mut turns = Vec::with_capacity(messages.len());
    for m in messages {
        if let Some(key) = m
            .keys()
            .find(|k| !["role", "content", "name"].contains(&k.as_str()))
        {
            return refuse(&format!("the chat message field {key:?}"));
        }
        let role = match m.get("role") {
            Some(r) => text_of(r, "role")?,
            None => return refuse("chat messages without a role"),
        };
        let content = match m.get("content") {
            Some(c) => text_of(c, "message content")?,
            None => String::new(),
        };
        let name = m.get("name").map(|n| text_of(n, "name")).transpose()?;
        turns.push(ChatMessage {
            role,
            content,
            name,
        });
    }
    if turns.is_empty() {
        return refuse("a chat request without messages");
    }
    Ok(turns)
}

fn prompt_of(message: &RequestMessage) -> Result<(PromptSource, bool), Unsupported> {
    match message {
        RequestMessage::Chat {
            messages,
            enable_thinking,
            reasoning_effort,
        } => {
            if enable_thinking == &Some(true) {
                return refuse("enable_thinking");
            }
            if reasoning_effort.is_some() {
                return refuse("reasoning_effort");
            }
            Ok((PromptSource::Chat(chat_messages(messages)?), false))
        }
        RequestMessage::Completion {
            text,
            echo_prompt,
            best_of,
        } => {
            if best_of.is_some_and(|n| n > 1) {
                return refuse("best_of");
            }
            Ok((PromptSource::Text(text.clone()), *echo_prompt))
        }
        RequestMessage::CompletionTokens(ids) => Ok((PromptSource::Tokens(ids.clone()), false)),
        RequestMessage::MultimodalChat { .. } => refuse("images, audio or video (multimodal chat)"),
        RequestMessage::ImageGeneration { .. } => refuse("image generation"),
        RequestMessage::SpeechGeneration { .. } => refuse("speech generation"),
        RequestMessage::Embedding { .. } | RequestMessage::EmbeddingTokens { .. } => {
            refuse("embeddings")
        }
    }
}

fn sampling_of(
    p: &mistralrs_core::SamplingParams,
    seed: u64,
) -> Result<(SamplingParams, Vec<u32>), Unsupported> {
    let used = |x: Option<f32>, neutral: f32| x.is_some_and(|v| v != neutral);
    if p.n_choices != 1 {
        return refuse("n_choices other than 1");
    }
    if used(p.frequency_penalty, 0.0) {
        return refuse("frequency_penalty");
    }
    if used(p.presence_penalty, 0.0) {
        return refuse("presence_penalty");
    }
    if used(p.repetition_penalty, 1.0) {
        return refuse("repetition_penalty");
    }
    if p.min_p.is_some_and(|v| v > 0.0) {
        return refuse("min_p");
    }
    if p.logits_bias.as_ref().is_some_and(|b| !b.is_empty()) {
        return refuse("logits_bias");
    }
    if p.dry_params.is_some() {
        return refuse("DRY sampling (dry_params)");
    }
    if p.top_n_logprobs > 0 {
        return refuse("logprobs (top_n_logprobs)");
    }
    let stop_ids = match &p.stop_toks {
        None => Vec::new(),
        Some(StopTokens::Ids(ids)) => ids.clone(),
        Some(StopTokens::Seqs(_)) => {
            return refuse("stop sequences given as text (stop_toks Seqs)")
        }
    };
    if let Some(t) = p.temperature.filter(|t| !(t.is_finite() && *t >= 0.0)) {
        return refuse(&format!("temperature {t} (a finite number >= 0)"));
    }
    // mistral.rs treats a temperature below 1e-7 (or none) as greedy.
    let temperature = p.temperature.filter(|&t| t >= 1e-7).unwrap_or(0.0);
    let sampling = SamplingParams {
        temperature,
        top_k: p.top_k.unwrap_or(0),
        top_p: p.top_p.unwrap_or(1.0),
        seed,
        rules: Default::default(),
    };
    if let Err(e) = sampling.validate() {
        return refuse(&format!("these sampling values ({e})"));
    }
    Ok((sampling, stop_ids))
}

/// Translate `req`, or name the first feature the front cannot serve.
pub fn accept(req: &NormalRequest) -> Result<Accepted, Unsupported> {
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return refuse("tools");
    }
    if req.tool_choice.is_some() && req.tools.is_some() {
        return refuse("tool_choice");
    }
    match &req.constraint {
        Constraint::None => {}
        Constraint::Regex(_) => return refuse("grammar constraints (Constraint::Regex)"),
        Constraint::Lark(_) => return refuse("grammar constraints (Constraint::Lark)"),
        Constraint::JsonSchema(_) => return refuse("grammar constraints (Constraint::JsonSchema)"),
        Constraint::Llguidance(_) => return refuse("grammar constraints (Constraint::Llguidance)"),
    }
    if req.web_search_options.is_some() {
        return refuse("web search (web_search_options)");
    }
    if req
        .logits_processors
        .as_ref()
        .is_some_and(|l| !l.is_empty())
    {
        return refuse("custom logits processors");
    }
    if req.return_raw_logits {
        return refuse("raw logits (return_raw_logits)");
    }
    if req.return_logprobs {
        return refuse("logprobs (return_logprobs)");
    }
    if req.suffix.is_some() {
        return refuse("suffix");
    }
    let (prompt, echo) = prompt_of(&req.messages)?;
    let (sampling, stop_ids) = sampling_of(&req.sampling_params, req.id as u64)?;
    Ok(Accepted {
        prompt,
        echo,
        max_tokens: req.sampling_params.max_len,
        sampling,
        stop_ids,
        streaming: req.is_streaming,
        truncate: req.truncate_sequence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mistralrs_core::{Response, SamplingParams as MrsSampling};

    fn request(messages: RequestMessage) -> NormalRequest {
        let (tx, _rx) = tokio::sync::mpsc::channel::<Response>(1);
        NormalRequest::new_simple(messages, MrsSampling::deterministic(), tx, 7, None, None)
    }

    fn completion(text: &str) -> RequestMessage {
        RequestMessage::Completion {
            text: text.into(),
            echo_prompt: false,
            best_of: None,
        }
    }

    fn refused(req: &NormalRequest) -> String {
        accept(req).unwrap_err().to_string()
    }

    #[test]
    fn a_plain_completion_is_greedy() {
        let a = accept(&request(completion("Q: hi\nA:"))).unwrap();
        assert_eq!(a.prompt, PromptSource::Text("Q: hi\nA:".into()));
        assert!(a.sampling.is_greedy());
        assert_eq!(a.sampling.top_k, 1);
        assert!(!a.is_chat() && !a.streaming && !a.echo);
    }

    #[test]
    fn chat_turns_keep_role_and_text_parts() {
        let msg = |role: &str, content: MessageContent| {
            [
                ("role".to_string(), MessageContent::Left(role.into())),
                ("content".to_string(), content),
            ]
            .into_iter()
            .collect()
        };
        let parts = vec![[
            ("type".to_string(), serde_json::json!("text")),
            ("text".to_string(), serde_json::json!("b")),
        ]
        .into_iter()
        .collect()];
        let req = request(RequestMessage::Chat {
            messages: vec![
                msg("system", MessageContent::Left("a".into())),
                msg("user", MessageContent::Right(parts)),
            ],
            enable_thinking: None,
            reasoning_effort: None,
        });
        let a = accept(&req).unwrap();
        assert_eq!(
            a.prompt,
            PromptSource::Chat(vec![
                ChatMessage {
                    role: "system".into(),
                    content: "a".into(),
                    name: None,
                },
                ChatMessage {
                    role: "user".into(),
                    content: "b".into(),
                    name: None,
                },
            ])
        );
    }

    #[test]
    fn unsupported_features_are_named() {
        let mut r = request(completion("x"));
        r.constraint = Constraint::Regex("a+".into());
        assert!(refused(&r).contains("Constraint::Regex"));

        let mut r = request(completion("x"));
        r.web_search_options = Some(Default::default());
        assert!(refused(&r).contains("web search"));

        let mut r = request(completion("x"));
        r.sampling_params.repetition_penalty = Some(1.3);
        assert!(refused(&r).contains("repetition_penalty"));

        let mut r = request(completion("x"));
        r.sampling_params.stop_toks = Some(StopTokens::Seqs(vec!["\n".into()]));
        assert!(refused(&r).contains("stop sequences"));

        let r = request(RequestMessage::Embedding { prompt: "x".into() });
        assert!(refused(&r).contains("embeddings"));

        let mut r = request(completion("x"));
        r.sampling_params.stop_toks = Some(StopTokens::Ids(vec![3, 4]));
        assert_eq!(accept(&r).unwrap().stop_ids, vec![3, 4]);
    }
}
