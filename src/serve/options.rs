//! The OpenAI fields beyond the prompt and length: penalties, logit bias, logprobs and echo,
//! response format, stream options, `n` / `best_of`. Checked before anything is queued; each
//! error names its field.

use super::error::ApiError;
use super::openai::{CompletionBody, Endpoint};
use crate::engine::LogitRules;
use serde::Deserialize;
use serde_json::Value;

/// OpenAI's and vLLM's cap on alternatives per token.
pub const MAX_TOP_LOGPROBS: usize = 20;
/// Entries a `logit_bias` may hold (OpenAI's documented limit is 300 tokens).
pub const MAX_LOGIT_BIAS: usize = 300;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
    /// Accepted and ignored: nothing to pad over loopback.
    #[serde(default)]
    pub include_obfuscation: Option<bool>,
}

/// What a request asks for beyond sampling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Top alternatives per token; `None`: no logprobs.
    pub logprobs: Option<usize>,
    /// The answer starts with the prompt (completions).
    pub echo: bool,
    /// Streams end with a usage chunk.
    pub include_usage: bool,
}

pub fn check(body: &CompletionBody, endpoint: Endpoint) -> Result<Options, ApiError> {
    let bad = |field: &'static str, message: String| {
        Err(ApiError::bad_request(message).with_param(field))
    };
    let n = body.n.unwrap_or(1);
    if n != 1 {
        return bad("n", format!("n = {n}: this server answers n = 1 (one choice per request; send n requests with different seeds)"));
    }
    if let Some(best_of) = body.best_of.filter(|&b| b != n) {
        return bad(
            "best_of",
            format!("best_of = {best_of}: only best_of = n = 1 is supported"),
        );
    }
    if endpoint == Endpoint::Chat && body.echo.is_some() {
        return bad("echo", "`echo` belongs to /v1/completions".into());
    }
    if body.store == Some(true) {
        return bad(
            "store",
            "store = true: this server stores no completions".into(),
        );
    }
    if let Some(tier) = body
        .service_tier
        .as_deref()
        .filter(|t| !matches!(*t, "auto" | "default"))
    {
        return bad(
            "service_tier",
            format!("service_tier {tier:?}: there is one tier (\"auto\" or \"default\")"),
        );
    }
    check_response_format(body.response_format.as_ref())?;
    let stream = body.stream.unwrap_or(false);
    if body.stream_options.is_some() && !stream {
        return bad(
            "stream_options",
            "`stream_options` needs \"stream\": true".into(),
        );
    }
    let logprobs = logprobs(body, endpoint)?;
    if stream && logprobs.is_some() {
        return bad(
            "logprobs",
            "logprobs come with whole answers only; send \"stream\": false".into(),
        );
    }
    Ok(Options {
        logprobs,
        echo: body.echo.unwrap_or(false),
        include_usage: body
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
    })
}

fn check_response_format(format: Option<&Value>) -> Result<(), ApiError> {
    let Some(format) = format else { return Ok(()) };
    let refuse = |message: &str| {
        Err(ApiError::bad_request(message.to_string()).with_param("response_format"))
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(()),
        Some(kind @ ("json_object" | "json_schema")) => refuse(&format!(
            "response_format {kind:?} is not supported: this server has no constrained decoding; \
             ask for JSON in the prompt, or use {{\"type\": \"text\"}}"
        )),
        Some(kind) => refuse(&format!("unknown response_format type {kind:?} (\"text\")")),
        None => refuse("response_format needs a \"type\" (\"text\")"),
    }
}

/// Top alternatives per token, from chat's `logprobs` + `top_logprobs` or completions'
/// integer `logprobs`.
fn logprobs(body: &CompletionBody, endpoint: Endpoint) -> Result<Option<usize>, ApiError> {
    let range = |field: &'static str, n: u64| {
        if n > MAX_TOP_LOGPROBS as u64 {
            return Err(ApiError::bad_request(format!(
                "{field} = {n} is out of range: 0 to {MAX_TOP_LOGPROBS}"
            ))
            .with_param(field));
        }
        Ok(n as usize)
    };
    let value = body.logprobs.as_ref().filter(|v| !v.is_null());
    match endpoint {
        Endpoint::Chat => {
            let on = match value {
                None => false,
                Some(Value::Bool(on)) => *on,
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "`logprobs` takes true or false in chat completions, got {other} \
                         (the number of alternatives is `top_logprobs`)"
                    ))
                    .with_param("logprobs"))
                }
            };
            match (on, body.top_logprobs) {
                (true, top) => Ok(Some(range("top_logprobs", top.unwrap_or(0) as u64)?)),
                (false, Some(_)) => Err(ApiError::bad_request(
                    "`top_logprobs` needs \"logprobs\": true",
                )
                .with_param("top_logprobs")),
                (false, None) => Ok(None),
            }
        }
        Endpoint::Completion => {
            if body.top_logprobs.is_some() {
                return Err(ApiError::bad_request(
                    "`top_logprobs` belongs to chat completions; here `logprobs` is the count",
                )
                .with_param("top_logprobs"));
            }
            match value {
                None => Ok(None),
                Some(Value::Number(n)) if n.as_u64().is_some() => {
                    Ok(Some(range("logprobs", n.as_u64().unwrap_or(0))?))
                }
                Some(other) => Err(ApiError::bad_request(format!(
                    "`logprobs` takes an integer 0 to {MAX_TOP_LOGPROBS} in completions, got {other}"
                ))
                .with_param("logprobs")),
            }
        }
    }
}

/// Penalties and logit bias for the sampler.
pub fn logit_rules(body: &CompletionBody, vocab_size: usize) -> Result<LogitRules, ApiError> {
    let penalty = |field: &'static str, value: Option<f32>| match value {
        Some(v) if !(-2.0..=2.0).contains(&v) => Err(ApiError::bad_request(format!(
            "{field} = {v} is out of range: -2 to 2"
        ))
        .with_param(field)),
        v => Ok(v.unwrap_or(0.0)),
    };
    let repetition_penalty = match body.repetition_penalty {
        Some(r) if !(r > 0.0 && r <= 10.0) => {
            return Err(ApiError::bad_request(format!(
                "repetition_penalty = {r} is out of range: above 0, at most 10 (1 = off)"
            ))
            .with_param("repetition_penalty"))
        }
        r => r.unwrap_or(1.0),
    };
    Ok(LogitRules {
        frequency_penalty: penalty("frequency_penalty", body.frequency_penalty)?,
        presence_penalty: penalty("presence_penalty", body.presence_penalty)?,
        repetition_penalty,
        logit_bias: logit_bias(body.logit_bias.as_ref(), vocab_size)?,
        logprobs: None,
    })
}

fn logit_bias(
    bias: Option<&std::collections::HashMap<String, f64>>,
    vocab_size: usize,
) -> Result<Vec<(u32, f32)>, ApiError> {
    let Some(bias) = bias else {
        return Ok(Vec::new());
    };
    let bad = |message: String| Err(ApiError::bad_request(message).with_param("logit_bias"));
    if bias.len() > MAX_LOGIT_BIAS {
        return bad(format!(
            "logit_bias has {} entries; at most {MAX_LOGIT_BIAS}",
            bias.len()
        ));
    }
    let mut out = Vec::with_capacity(bias.len());
    for (key, &value) in bias {
        let token = match key.parse::<u32>() {
            Ok(t) if (t as usize) < vocab_size => t,
            _ => {
                return bad(format!(
                    "logit_bias key {key:?} is not a token id of this model (0 to {})",
                    vocab_size.saturating_sub(1)
                ))
            }
        };
        if !(-100.0..=100.0).contains(&value) {
            return bad(format!(
                "logit_bias value {value} for token {token} is out of range: -100 to 100"
            ));
        }
        out.push((token, value as f32));
    }
    out.sort_by_key(|&(t, _)| t);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::openai::{parse, Endpoint, RequestRules};
    use crate::engine::SamplingParams;

    fn param(body: &str, endpoint: Endpoint) -> Option<&'static str> {
        let rules = RequestRules {
            model_name: "tiny".into(),
            max_tokens: 64,
            default_max_tokens: 8,
            sampling: SamplingParams::greedy(),
            vocab_size: 100,
        };
        parse(body.as_bytes(), endpoint, &rules).unwrap_err().param
    }

    #[test]
    fn each_bad_option_names_its_field() {
        let c = Endpoint::Completion;
        let chat = Endpoint::Chat;
        let m = r#""messages":[{"role":"user","content":"x"}]"#;
        assert_eq!(
            param(r#"{"prompt":"x","logit_bias":{"100":1}}"#, c),
            Some("logit_bias")
        );
        assert_eq!(
            param(r#"{"prompt":"x","logit_bias":{"a":1}}"#, c),
            Some("logit_bias")
        );
        assert_eq!(
            param(r#"{"prompt":"x","logit_bias":{"5":101}}"#, c),
            Some("logit_bias")
        );
        let many: Vec<String> = (0..301).map(|i| format!("\"{i}\":1")).collect();
        let body = format!(r#"{{"prompt":"x","logit_bias":{{{}}}}}"#, many.join(","));
        assert_eq!(param(&body, c), Some("logit_bias"));
        assert_eq!(
            param(r#"{"prompt":"x","logprobs":21}"#, c),
            Some("logprobs")
        );
        assert_eq!(
            param(r#"{"prompt":"x","logprobs":true}"#, c),
            Some("logprobs")
        );
        assert_eq!(
            param(&format!(r#"{{{m},"logprobs":3}}"#), chat),
            Some("logprobs")
        );
        assert_eq!(
            param(&format!(r#"{{{m},"top_logprobs":3}}"#), chat),
            Some("top_logprobs")
        );
        let body = format!(r#"{{{m},"logprobs":true,"top_logprobs":21}}"#);
        assert_eq!(param(&body, chat), Some("top_logprobs"));
        assert_eq!(
            param(r#"{"prompt":"x","frequency_penalty":3}"#, c),
            Some("frequency_penalty")
        );
        assert_eq!(
            param(r#"{"prompt":"x","repetition_penalty":0}"#, c),
            Some("repetition_penalty")
        );
        assert_eq!(
            param(r#"{"prompt":"x","max_tokens":0}"#, c),
            Some("max_tokens")
        );
        assert_eq!(param(r#"{"prompt":"x","best_of":2}"#, c), Some("best_of"));
        assert_eq!(param(r#"{"prompt":"x","n":2}"#, c), Some("n"));
        let body = r#"{"prompt":"x","response_format":{"type":"json_object"}}"#;
        assert_eq!(param(body, c), Some("response_format"));
        let body = r#"{"prompt":"x","stream_options":{"include_usage":true}}"#;
        assert_eq!(param(body, c), Some("stream_options"));
        assert_eq!(
            param(r#"{"prompt":"x","stream":true,"logprobs":1}"#, c),
            Some("logprobs")
        );
        assert_eq!(
            param(&format!(r#"{{{m},"echo":true}}"#), chat),
            Some("echo")
        );
        assert_eq!(param(r#"{"prompt":"x","store":true}"#, c), Some("store"));
        assert_eq!(param(r#"{"prompt":"x","suffix":"y"}"#, c), Some("suffix"));
    }
}
