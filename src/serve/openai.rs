//! The OpenAI request bodies we accept, checked field by field before any compute is queued.
//!
//! Chat and text completions share one body type: the endpoint decides whether `messages` or
//! `prompt` is required. OpenAI fields we do not implement (tools, audio, …) are refused by
//! name with the reason (see `serve::fields`); fields nobody defined are unknown fields,
//! refused with their name. Neither is ever silently ignored. The sampling and logprob fields
//! are checked in `serve::options`.

use super::error::ApiError;
use super::input::{check_messages, check_prompt, check_stop};
use super::options::{self, Options};
use crate::engine::kv_fill::KvFill;
use crate::engine::modes::Mode;
use crate::engine::SamplingParams;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletionBody {
    #[serde(default)]
    pub model: Option<String>,
    /// `/v1/chat/completions` only.
    #[serde(default)]
    pub messages: Option<Vec<ChatMessage>>,
    /// `/v1/completions` only: a string, or a list holding one string.
    #[serde(default)]
    pub prompt: Option<PromptText>,
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// The newer name of `max_tokens` in the chat API.
    #[serde(default)]
    pub max_completion_tokens: Option<usize>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Not in OpenAI's API; vLLM and mistral.rs accept it too.
    #[serde(default)]
    pub top_k: Option<usize>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub stream: Option<bool>,
    /// `{"include_usage": true}`: a last chunk with the usage (and no choices).
    #[serde(default)]
    pub stream_options: Option<options::StreamOptions>,
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    /// Not in OpenAI's API; as vLLM and mistral.rs (HF's definition).
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
    /// Token id (as a string) → bias in [-100, 100].
    #[serde(default)]
    pub logit_bias: Option<std::collections::HashMap<String, f64>>,
    /// Chat: `true`/`false`; completions: how many top alternatives (0–20) per token.
    #[serde(default)]
    pub logprobs: Option<serde_json::Value>,
    /// Chat only: top alternatives per token (0–20), with `logprobs: true`.
    #[serde(default)]
    pub top_logprobs: Option<usize>,
    /// Completions only: the answer starts with the prompt (and its logprobs, if asked).
    #[serde(default)]
    pub echo: Option<bool>,
    /// Completions only: 1 (or equal to `n`) is supported.
    #[serde(default)]
    pub best_of: Option<usize>,
    /// `{"type": "text"}` only.
    #[serde(default)]
    pub response_format: Option<serde_json::Value>,
    /// Up to 4 strings; the answer ends before the first one generated.
    #[serde(default)]
    pub stop: Option<PromptText>,
    /// Keep generating past end-of-text until `max_tokens` (vLLM's extension; for load tests).
    #[serde(default)]
    pub ignore_eos: Option<bool>,
    /// Only 1 is supported.
    #[serde(default)]
    pub n: Option<usize>,
    /// Accepted and ignored (OpenAI uses it for abuse monitoring).
    #[serde(default)]
    pub user: Option<String>,
    /// Accepted and ignored, like `user`.
    #[serde(default)]
    pub safety_identifier: Option<String>,
    /// Accepted and ignored: a prompt-cache routing hint (one engine here).
    #[serde(default)]
    pub prompt_cache_key: Option<String>,
    /// Only `false`: nothing is stored.
    #[serde(default)]
    pub store: Option<bool>,
    /// Accepted and ignored (tags for stored completions; nothing is stored).
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// `auto` or `default` only: there is one tier.
    #[serde(default)]
    pub service_tier: Option<String>,
    /// Our extension: which exit policy answers this request.
    #[serde(default)]
    pub adainfer: Option<AdaInferOptions>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A string, or a list of strings (`prompt`, `stop`); `prompt` may also be token ids (a list,
/// or a list holding one list, as lm-evaluation-harness sends).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PromptText {
    One(String),
    List(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaInferOptions {
    /// `dense`, or a policy kind of the plugin (`gap_threshold`, `shortgpt`, …).
    #[serde(default)]
    pub policy: Option<String>,
    /// `early_exit` or `self_speculative` (`dense`: every layer, whatever the policy).
    #[serde(default)]
    pub mode: Option<Mode>,
    /// `recompute`, `propagate` (needed by static policies) or `dense_after_prefill`.
    #[serde(default)]
    pub kv_fill: Option<KvFill>,
}

/// Which endpoint a body came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

/// A checked request: everything the worker needs, nothing left to validate but the prompt's
/// token count (only the tokenizer knows it).
#[derive(Debug, Clone)]
pub struct ValidRequest {
    pub endpoint: Endpoint,
    /// Chat messages or the completion prompt.
    pub input: Input,
    pub max_tokens: usize,
    /// With the request's penalties and logit bias in `sampling.rules`.
    pub sampling: SamplingParams,
    pub stream: bool,
    pub options: Options,
    pub ignore_eos: bool,
    pub stop: Vec<String>,
    pub policy: Option<String>,
    pub mode: Option<Mode>,
    pub kv_fill: Option<KvFill>,
}

#[derive(Debug, Clone)]
pub enum Input {
    Messages(Vec<ChatMessage>),
    Prompt(String),
    Tokens(Vec<u32>),
}

/// Limits and defaults the server applies to every body.
#[derive(Debug, Clone)]
pub struct RequestRules {
    pub model_name: String,
    pub max_tokens: usize,
    pub default_max_tokens: usize,
    pub sampling: SamplingParams,
    /// Token ids in `logit_bias` must be below it.
    pub vocab_size: usize,
}

pub fn parse(
    bytes: &[u8],
    endpoint: Endpoint,
    rules: &RequestRules,
) -> Result<ValidRequest, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    let serde_json::Value::Object(mut map) = value else {
        return Err(ApiError::bad_request(
            "invalid request body: expected a JSON object",
        ));
    };
    super::fields::screen(&mut map)?;
    // The path names the field a bad value sits in (`max_tokens: invalid value: integer -1`).
    let body: CompletionBody = serde_path_to_error::deserialize(serde_json::Value::Object(map))
        .map_err(|e| {
            let path = e.path().to_string();
            let detail = e.into_inner();
            match path.as_str() {
                "" | "." => ApiError::bad_request(format!("invalid request body: {detail}")),
                field => {
                    ApiError::bad_request(format!("invalid request body: `{field}`: {detail}"))
                }
            }
        })?;
    check(body, endpoint, rules)
}

fn check(
    body: CompletionBody,
    endpoint: Endpoint,
    rules: &RequestRules,
) -> Result<ValidRequest, ApiError> {
    if let Some(model) = &body.model {
        // "default": clients that must name a model but do not know ours.
        if model != &rules.model_name && model != "default" {
            return Err(ApiError::not_found(format!(
                "model {model:?} is not served here; this server serves {:?}",
                rules.model_name
            ))
            .with_param("model"));
        }
    }
    let options = options::check(&body, endpoint)?;
    let input = match (endpoint, body.messages.clone(), body.prompt.clone()) {
        (Endpoint::Chat, Some(messages), None) => Input::Messages(check_messages(messages)?),
        (Endpoint::Completion, None, Some(prompt)) => check_prompt(prompt)?,
        (Endpoint::Chat, _, Some(_)) => {
            return Err(ApiError::bad_request(
                "`prompt` belongs to /v1/completions; chat completions take `messages`",
            )
            .with_param("prompt"))
        }
        (Endpoint::Chat, None, None) => {
            return Err(ApiError::bad_request("missing field `messages`").with_param("messages"))
        }
        (Endpoint::Completion, Some(_), _) => {
            return Err(ApiError::bad_request(
                "`messages` belongs to /v1/chat/completions; completions take `prompt`",
            )
            .with_param("messages"))
        }
        (Endpoint::Completion, None, None) => {
            return Err(ApiError::bad_request("missing field `prompt`").with_param("prompt"))
        }
    };
    let max_tokens = body
        .max_completion_tokens
        .or(body.max_tokens)
        .unwrap_or(rules.default_max_tokens);
    // 0 scores the prompt only, which needs `echo` (as in OpenAI's legacy API and vLLM).
    let least = usize::from(!options.echo);
    if max_tokens < least || max_tokens > rules.max_tokens {
        let zero = match least {
            1 => " (0 only with \"echo\": true, to score the prompt)",
            _ => "",
        };
        return Err(ApiError::bad_request(format!(
            "max_tokens = {max_tokens} is out of range: this server allows {least} to {}{zero}",
            rules.max_tokens
        ))
        .with_param("max_tokens"));
    }
    let defaults = &rules.sampling;
    let sampling = SamplingParams {
        temperature: body.temperature.unwrap_or(defaults.temperature),
        top_k: body.top_k.unwrap_or(defaults.top_k),
        top_p: body.top_p.unwrap_or(defaults.top_p),
        seed: body.seed.unwrap_or(defaults.seed),
        rules: options::logit_rules(&body, rules.vocab_size)?,
    };
    sampling
        .validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(ValidRequest {
        endpoint,
        input,
        max_tokens,
        sampling,
        stream: body.stream.unwrap_or(false),
        options,
        ignore_eos: body.ignore_eos.unwrap_or(false),
        stop: check_stop(body.stop)?,
        policy: body.adainfer.as_ref().and_then(|a| a.policy.clone()),
        mode: body.adainfer.as_ref().and_then(|a| a.mode),
        kv_fill: body.adainfer.and_then(|a| a.kv_fill),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> RequestRules {
        RequestRules {
            model_name: "tiny".into(),
            max_tokens: 64,
            default_max_tokens: 8,
            sampling: SamplingParams::greedy(),
            vocab_size: 100,
        }
    }

    fn error(body: &str, endpoint: Endpoint) -> ApiError {
        parse(body.as_bytes(), endpoint, &rules()).unwrap_err()
    }

    #[test]
    fn a_chat_body_takes_defaults() {
        let r = parse(
            br#"{"model":"tiny","messages":[{"role":"user","content":"hi"}],"adainfer":{"policy":"svm","mode":"self_speculative"}}"#,
            Endpoint::Chat,
            &rules(),
        )
        .unwrap();
        assert_eq!(r.max_tokens, 8);
        assert!(!r.stream);
        assert_eq!(r.sampling, SamplingParams::greedy());
        assert_eq!(r.policy.as_deref(), Some("svm"));
        assert_eq!(r.mode, Some(Mode::SelfSpeculative));
        assert!(matches!(r.input, Input::Messages(m) if m[0].content == "hi"));
        let r = parse(
            br#"{"prompt":["Q: x\nA:"],"max_tokens":3,"temperature":0.5,"seed":9,"stream":true,"ignore_eos":true,"stop":"\n"}"#,
            Endpoint::Completion,
            &rules(),
        )
        .unwrap();
        assert!(matches!(&r.input, Input::Prompt(p) if p == "Q: x\nA:"));
        assert_eq!(
            (r.max_tokens, r.sampling.seed, r.stream, r.ignore_eos),
            (3, 9, true, true)
        );
        assert_eq!(r.stop, vec!["\n".to_string()]);
    }

    #[test]
    fn bad_bodies_name_what_is_wrong() {
        let e = error("{not json", Endpoint::Chat);
        assert!(e.message.contains("invalid request body"), "{e}");
        let e = error(r#"{"prompt":"x","toolz":[]}"#, Endpoint::Completion);
        assert!(e.message.contains("unknown field `toolz`"), "{e}");
        let e = error(r#"{"prompt":"x","tools":[{}]}"#, Endpoint::Completion);
        assert_eq!(e.param, Some("tools"));
        let e = error(
            r#"{"prompt":"x","adainfer":{"polcy":"x"}}"#,
            Endpoint::Completion,
        );
        assert!(e.message.contains("polcy"), "{e}");
        let e = error(
            r#"{"prompt":"x","adainfer":{"mode":"fast"}}"#,
            Endpoint::Completion,
        );
        assert!(e.message.contains("early_exit"), "{e}");
        let e = error(r#"{"prompt":"x","max_tokens":65}"#, Endpoint::Completion);
        assert_eq!(e.param, Some("max_tokens"));
        assert!(e.message.contains("1 to 64"), "{e}");
        let e = error(r#"{"prompt":"x","temperature":-1}"#, Endpoint::Completion);
        assert!(e.message.contains("temperature"), "{e}");
        let e = error(r#"{"prompt":"x","model":"gpt-4"}"#, Endpoint::Completion);
        assert_eq!(e.status, axum::http::StatusCode::NOT_FOUND);
        let e = error(r#"{"prompt":"x","n":2}"#, Endpoint::Completion);
        assert_eq!(e.param, Some("n"));
        let e = error(
            r#"{"messages":[{"role":"tool","content":"x"}]}"#,
            Endpoint::Chat,
        );
        assert!(e.message.contains("tool"), "{e}");
        let e = error(r#"{"messages":[]}"#, Endpoint::Chat);
        assert_eq!(e.param, Some("messages"));
        let e = error(r#"{"prompt":"x"}"#, Endpoint::Chat);
        assert_eq!(e.param, Some("prompt"));
        let e = error(
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
            Endpoint::Completion,
        );
        assert_eq!(e.param, Some("messages"));
        let e = error(r#"{"prompt":["a","b"]}"#, Endpoint::Completion);
        assert!(e.message.contains("2 prompts"), "{e}");
        let e = error(
            r#"{"prompt":"x","stop":["a","b","c","d","e"]}"#,
            Endpoint::Completion,
        );
        assert_eq!(e.param, Some("stop"));
        let e = error(r#"{"prompt":"x","stop":""}"#, Endpoint::Completion);
        assert_eq!(e.param, Some("stop"));
        let e = error(r#"{"prompt":""}"#, Endpoint::Completion);
        assert!(e.message.contains("empty"), "{e}");
    }
}
