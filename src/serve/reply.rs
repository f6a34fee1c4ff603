//! OpenAI response bodies: whole completions and streamed chunks, each with our `adainfer`
//! object (policy, exit layer of every forward pass, layers saved) where the answer is complete.

use super::logprobs;
use super::openai::Endpoint;
use super::worker::Summary;
use crate::engine::FinishReason;
use serde_json::{json, Value};

/// What every body of one response repeats.
#[derive(Debug, Clone)]
pub struct ReplyHead {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl ReplyHead {
    fn body(&self, object: &str, choice: Value) -> Value {
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        })
    }

    /// The non-streaming answer.
    pub fn complete(&self, s: &Summary) -> Value {
        let finish = finish_reason(s.finish_reason);
        let mut body = match self.endpoint {
            Endpoint::Chat => self.body(
                "chat.completion",
                json!({
                    "index": 0,
                    "message": {"role": "assistant", "content": s.text},
                    "logprobs": s.logprobs.as_deref().map(logprobs::chat_json),
                    "finish_reason": finish,
                }),
            ),
            Endpoint::Completion => {
                let text = format!("{}{}", s.echo.as_deref().unwrap_or(""), s.text);
                let logprobs = s.logprobs.as_deref().map(logprobs::completion_json);
                self.body(
                    "text_completion",
                    json!({"index": 0, "text": text, "finish_reason": finish, "logprobs": logprobs}),
                )
            }
        };
        body["usage"] = usage(s);
        body["adainfer"] = adainfer(s);
        body
    }

    /// A streamed chunk carrying new text (`first`: the chat stream's opening chunk names the role).
    pub fn delta(&self, text: &str, first: bool) -> Value {
        match self.endpoint {
            Endpoint::Chat => {
                let delta = if first {
                    json!({"role": "assistant", "content": text})
                } else {
                    json!({"content": text})
                };
                self.body(
                    "chat.completion.chunk",
                    json!({"index": 0, "delta": delta, "finish_reason": null}),
                )
            }
            Endpoint::Completion => self.body(
                "text_completion",
                json!({"index": 0, "text": text, "finish_reason": null, "logprobs": null}),
            ),
        }
    }

    /// The last streamed chunk: finish reason, usage and the `adainfer` object.
    pub fn last(&self, s: &Summary) -> Value {
        let finish = finish_reason(s.finish_reason);
        let mut body = match self.endpoint {
            Endpoint::Chat => self.body(
                "chat.completion.chunk",
                json!({"index": 0, "delta": {}, "finish_reason": finish}),
            ),
            Endpoint::Completion => self.body(
                "text_completion",
                json!({"index": 0, "text": "", "finish_reason": finish, "logprobs": null}),
            ),
        };
        body["usage"] = usage(s);
        body["adainfer"] = adainfer(s);
        body
    }

    /// With `stream_options.include_usage`: the chunk after the last, with no choices.
    pub fn usage_chunk(&self, s: &Summary) -> Value {
        let object = match self.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completion => "text_completion",
        };
        let mut body = self.body(object, json!(null));
        body["choices"] = json!([]);
        body["usage"] = usage(s);
        body
    }
}

fn finish_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

fn usage(s: &Summary) -> Value {
    json!({
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "total_tokens": s.prompt_tokens + s.completion_tokens,
    })
}

/// Our extension: how deep the model went for this answer. `exit_layers[i]`: the layer whose
/// output chose token i (the engine's depth: the exit layer, or `num_layers` for a full pass);
/// `layers_saved`: the layers after those exits. Layers a static policy (shortgpt,
/// unified_skip) skips before the exit are not in that count.
fn adainfer(s: &Summary) -> Value {
    let tokens = s.depths.len();
    let run: usize = s.depths.iter().sum();
    let avg = if tokens == 0 {
        Value::Null
    } else {
        json!(run as f64 / tokens as f64)
    };
    let mut object = json!({
        "policy": s.policy,
        "mode": s.mode,
        "num_layers": s.num_layers,
        "exit_layers": s.depths,
        "avg_exit_layer": avg,
        "layers_saved": (s.num_layers * tokens).saturating_sub(run),
    });
    if let Some(tokens) = &s.logprobs {
        // What depth cost: an early exit's logprobs are the exited layer's distribution.
        object["logprob_layers"] = json!(logprobs::layers(tokens));
        object["logprobs_note"] = json!(
            "each logprob is from the distribution of the layer in logprob_layers (the exit \
             layer when the policy stopped early, num_layers for a full pass); echoed prompt \
             tokens come from one pass over the prompt, stopped where the policy said"
        );
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_openai_shape_and_our_extension() {
        let head = ReplyHead {
            endpoint: Endpoint::Chat,
            id: "chatcmpl-1".into(),
            created: 5,
            model: "tiny".into(),
        };
        let s = Summary {
            text: " positive".into(),
            prompt_tokens: 7,
            completion_tokens: 1,
            finish_reason: FinishReason::Length,
            policy: "gap_threshold".into(),
            mode: "early_exit/recompute".into(),
            num_layers: 12,
            depths: vec![3],
            prefill_seconds: 0.5,
            decode_seconds: 0.0,
            echo: None,
            logprobs: None,
        };
        let b = head.complete(&s);
        assert_eq!(b["object"], "chat.completion");
        assert_eq!(b["choices"][0]["message"]["content"], " positive");
        assert_eq!(b["choices"][0]["finish_reason"], "length");
        assert_eq!(b["usage"]["total_tokens"], 8);
        assert_eq!(b["adainfer"]["exit_layers"], json!([3]));
        assert_eq!(b["adainfer"]["layers_saved"], 9);
        assert_eq!(b["adainfer"]["mode"], "early_exit/recompute");
        assert_eq!(
            head.delta("a", true)["choices"][0]["delta"]["role"],
            "assistant"
        );
        assert_eq!(head.last(&s)["choices"][0]["delta"], json!({}));
        let head = ReplyHead {
            endpoint: Endpoint::Completion,
            ..head
        };
        assert_eq!(head.complete(&s)["choices"][0]["text"], " positive");
        assert_eq!(head.delta("a", false)["object"], "text_completion");
    }
}
