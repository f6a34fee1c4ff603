//! `/tokenize` and `/detokenize`, as vLLM and llama.cpp's server answer them: the served
//! model's token ids of a prompt or of chat messages (through the chat template, as a chat
//! request would be), and the text of token ids.

use super::error::ApiError;
use super::http::{render, App};
use super::openai::ChatMessage;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenizeBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    messages: Option<Vec<ChatMessage>>,
    /// Default true: the ids the engine runs for this text (what `usage.prompt_tokens` counts).
    #[serde(default)]
    add_special_tokens: Option<bool>,
    /// Accepted for vLLM's clients; the chat template always ends with the assistant's turn.
    #[serde(default)]
    add_generation_prompt: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DetokenizeBody {
    #[serde(default)]
    model: Option<String>,
    tokens: Vec<u32>,
}

fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    let mut json = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        ApiError::bad_request(format!(
            "invalid request body: `{path}`: {}",
            e.into_inner()
        ))
    })
}

fn check_model(app: &App, model: Option<&String>) -> Result<(), ApiError> {
    match model {
        Some(m) if m != &app.rules.model_name && m != "default" => {
            Err(ApiError::not_found(format!(
                "model {m:?} is not served here; this server serves {:?}",
                app.rules.model_name
            ))
            .with_param("model"))
        }
        _ => Ok(()),
    }
}

pub async fn tokenize(State(app): State<App>, raw: Bytes) -> Response {
    let answer = (|| {
        let b: TokenizeBody = body(&raw)?;
        check_model(&app, b.model.as_ref())?;
        let _ = b.add_generation_prompt;
        let text = match (b.prompt, b.messages) {
            (Some(prompt), None) => prompt,
            (None, Some(messages)) => render(&app, &messages)?,
            _ => {
                return Err(ApiError::bad_request("give either `prompt` or `messages`")
                    .with_param("prompt"))
            }
        };
        let encoding = app
            .tokenizer
            .encode(text, b.add_special_tokens.unwrap_or(true))
            .map_err(|e| ApiError::bad_request(format!("cannot tokenize: {e}")))?;
        let tokens = encoding.get_ids();
        Ok(json!({"tokens": tokens, "count": tokens.len(), "max_model_len": app.max_model_len}))
    })();
    let response = answer.map(|v| Json(v).into_response());
    response.unwrap_or_else(IntoResponse::into_response)
}

pub async fn detokenize(State(app): State<App>, raw: Bytes) -> Response {
    let answer = (|| {
        let b: DetokenizeBody = body(&raw)?;
        check_model(&app, b.model.as_ref())?;
        let vocab = app.rules.vocab_size;
        if let Some(bad) = b.tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(ApiError::bad_request(format!(
                "token id {bad} is outside the vocabulary (0 to {})",
                vocab.saturating_sub(1)
            ))
            .with_param("tokens"));
        }
        let prompt = crate::engine::decode(&app.tokenizer, &b.tokens)
            .map_err(|e| ApiError::bad_request(format!("{e:#}")).with_param("tokens"))?;
        Ok(json!({"prompt": prompt}))
    })();
    let response = answer.map(|v| Json(v).into_response());
    response.unwrap_or_else(IntoResponse::into_response)
}
