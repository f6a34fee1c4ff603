//! OpenAI fields we know but do not implement: each is refused by name with the reason, so a
//! client learns what to drop instead of getting an answer that silently ignored it. A field
//! sent as `null` (or a value that asks for nothing, like `"tool_choice": "none"`) is dropped
//! before the body is parsed, since many clients send every field they know.

use super::error::ApiError;
use serde_json::{Map, Value};

/// (field, why it is refused).
pub const REFUSED: &[(&str, &str)] = &[
    (
        "tools",
        "tool calling is not implemented (no function-call parser for this model)",
    ),
    (
        "tool_choice",
        "tool calling is not implemented; only \"none\" is accepted",
    ),
    ("parallel_tool_calls", "tool calling is not implemented"),
    (
        "functions",
        "function calling (the deprecated `functions`) is not implemented",
    ),
    (
        "function_call",
        "function calling (the deprecated `function_call`) is not implemented",
    ),
    (
        "suffix",
        "fill-in-the-middle (`suffix`) is not supported by this model's template",
    ),
    (
        "modalities",
        "only text output is served; send [\"text\"] or leave it out",
    ),
    ("audio", "audio output is not served (text models only)"),
    ("prediction", "predicted outputs are not implemented"),
    (
        "reasoning_effort",
        "the served model is not a reasoning model",
    ),
    ("verbosity", "the served model has no verbosity control"),
    (
        "web_search_options",
        "web search is not available (the server has no network tools)",
    ),
];

/// Drop fields that ask for nothing, and refuse the first refused field that asks for
/// something.
pub fn screen(body: &mut Map<String, Value>) -> Result<(), ApiError> {
    body.retain(|key, value| !asks_for_nothing(key, value));
    for &(field, why) in REFUSED {
        if body.contains_key(field) {
            return Err(
                ApiError::bad_request(format!("`{field}` is not supported: {why}"))
                    .with_param(field),
            );
        }
    }
    Ok(())
}

fn asks_for_nothing(key: &str, value: &Value) -> bool {
    let refused = REFUSED.iter().any(|(field, _)| *field == key);
    match (key, value) {
        (_, Value::Null) => refused,
        ("tools" | "functions", Value::Array(list)) => list.is_empty(),
        ("tool_choice" | "function_call", Value::String(s)) => s == "none",
        // How tools may be called; with no tools (refused on their own) it asks for nothing.
        ("parallel_tool_calls", Value::Bool(_)) => true,
        ("modalities", Value::Array(list)) => list.iter().all(|m| m == "text"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn screened(body: Value) -> Result<Value, ApiError> {
        let Value::Object(mut map) = body else {
            unreachable!()
        };
        screen(&mut map).map(|_| Value::Object(map))
    }

    #[test]
    fn refused_fields_are_named_and_empty_ones_dropped() {
        let e = screened(json!({"prompt": "x", "tools": [{"type": "function"}]})).unwrap_err();
        assert_eq!(e.param, Some("tools"));
        assert!(e.message.contains("tool calling"), "{e}");
        let e = screened(json!({"suffix": "end"})).unwrap_err();
        assert_eq!(e.param, Some("suffix"));
        let e = screened(json!({"modalities": ["text", "audio"]})).unwrap_err();
        assert_eq!(e.param, Some("modalities"));
        let kept = screened(json!({
            "prompt": "x", "tools": [], "tool_choice": "none", "audio": null,
            "parallel_tool_calls": false, "modalities": ["text"], "top_k": null
        }))
        .unwrap();
        // Unknown fields stay, for the parser to refuse; known ones that ask nothing go.
        assert_eq!(kept, json!({"prompt": "x", "top_k": null}));
    }
}
