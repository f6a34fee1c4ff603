//! Log-probabilities in OpenAI's two shapes: completions' parallel lists (`tokens`,
//! `token_logprobs`, `top_logprobs`, `text_offset`) and chat's `content` entries. Token strings
//! are cut so that they add up to the answer's text exactly (a character split over several
//! byte-level tokens belongs to the token that completes it), and `text_offset` counts
//! characters into the returned text, echoed prompt included, as vLLM does.

use crate::engine::logit_rules::step_logprobs;
use crate::engine::{Outputs, StepLogprobs};
use crate::hook::LayerHook;
use crate::Engine;
use anyhow::Result;
use candle_core::IndexOp;
use serde_json::{json, Map, Value};

/// One token of the answer with its log-probability.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    /// Its share of the text.
    pub text: String,
    /// `None` for the prompt's first token (nothing before it to predict it from).
    pub logprob: Option<f32>,
    /// Alternatives, most likely first, as single-token strings.
    pub top: Vec<(String, f32)>,
    /// Characters of the returned text before this token.
    pub text_offset: usize,
    /// Blocks of the pass whose distribution gave `logprob` (an exit layer under AdaInfer).
    pub layer: usize,
}

/// Each prompt token's log-probability given the tokens before it (the first has none), from
/// one pass over the prompt, and the blocks that pass ran. With a hook that exits, every
/// position's distribution comes from the exit layer.
pub fn score_prompt(
    engine: &Engine,
    ids: &[u32],
    hook: Option<&mut dyn LayerHook>,
    top: usize,
) -> Result<(Vec<Option<StepLogprobs>>, usize)> {
    let mut cache = engine.model.new_cache();
    let pass = engine
        .model
        .forward(ids, &mut cache, hook, Outputs::AllTokens)?;
    let mut steps = vec![None];
    for (row, &token) in ids.iter().enumerate().skip(1) {
        let logits: Vec<f32> = pass.logits.i(row - 1)?.to_vec1()?;
        steps.push(Some(step_logprobs(&logits, token, top)));
    }
    Ok((steps, pass.layers_run))
}

/// Every token's entry: the echoed prompt's (with `prompt_scores`), then the answer's.
pub fn tokens(
    engine: &Engine,
    prompt: &[u32],
    prompt_scores: Option<&(Vec<Option<StepLogprobs>>, usize)>,
    answer: &[u32],
    answer_steps: &[StepLogprobs],
    answer_layers: &[usize],
    echo: Option<&str>,
) -> Result<Vec<TokenLogprob>> {
    let mut out = Vec::new();
    let mut offset = 0;
    if let Some((steps, layer)) = prompt_scores {
        for ((&token, text), step) in prompt.iter().zip(pieces(engine, prompt)?).zip(steps) {
            out.push(entry(
                engine,
                token,
                text,
                step.as_ref(),
                &mut offset,
                *layer,
            )?);
        }
    }
    // The answer's offsets start after the echoed text as returned.
    if let Some(echo) = echo {
        offset = echo.chars().count();
    }
    let answer_pieces = pieces(engine, answer)?;
    for (i, (&token, text)) in answer.iter().zip(answer_pieces).enumerate() {
        let layer = answer_layers.get(i).copied().unwrap_or(0);
        out.push(entry(
            engine,
            token,
            text,
            answer_steps.get(i),
            &mut offset,
            layer,
        )?);
    }
    Ok(out)
}

fn entry(
    engine: &Engine,
    token: u32,
    text: String,
    step: Option<&StepLogprobs>,
    offset: &mut usize,
    layer: usize,
) -> Result<TokenLogprob> {
    let top = match step {
        Some(step) => step
            .top
            .iter()
            .map(|&(t, lp)| Ok((engine.decode(&[t])?, lp)))
            .collect::<Result<_>>()?,
        None => Vec::new(),
    };
    let text_offset = *offset;
    *offset += text.chars().count();
    Ok(TokenLogprob {
        token,
        text,
        logprob: step.map(|s| s.logprob),
        top,
        text_offset,
        layer,
    })
}

/// Each token's share of `decode(ids)`: what decoding up to it adds to decoding up to the
/// token before. A token that ends inside a character adds nothing; the one completing it
/// carries the character.
pub fn pieces(engine: &Engine, ids: &[u32]) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(ids.len());
    let mut settled = String::new();
    for end in 1..=ids.len() {
        let text = engine.decode(&ids[..end])?;
        match text.strip_prefix(settled.as_str()) {
            Some(added) if !text.ends_with('\u{FFFD}') || end == ids.len() => {
                out.push(added.to_string());
                settled = text;
            }
            _ => out.push(String::new()),
        }
    }
    Ok(out)
}

/// Completions' `logprobs` object.
pub fn completion_json(tokens: &[TokenLogprob]) -> Value {
    let top = |t: &TokenLogprob| match t.logprob {
        None => Value::Null,
        Some(_) => {
            let map: Map<String, Value> =
                t.top.iter().map(|(s, lp)| (s.clone(), json!(lp))).collect();
            Value::Object(map)
        }
    };
    json!({
        "tokens": tokens.iter().map(|t| &t.text).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(top).collect::<Vec<_>>(),
        "text_offset": tokens.iter().map(|t| t.text_offset).collect::<Vec<_>>(),
    })
}

/// Chat's `logprobs` object.
pub fn chat_json(tokens: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let top: Vec<Value> = t
                .top
                .iter()
                .map(|(s, lp)| json!({"token": s, "logprob": lp, "bytes": s.as_bytes()}))
                .collect();
            json!({
                "token": t.text,
                "logprob": t.logprob,
                "bytes": t.text.as_bytes(),
                "top_logprobs": top,
            })
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// Which layer each token's distribution came from (our `adainfer` object).
pub fn layers(tokens: &[TokenLogprob]) -> Vec<usize> {
    tokens.iter().map(|t| t.layer).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str, logprob: Option<f32>, offset: usize) -> TokenLogprob {
        TokenLogprob {
            token: 1,
            text: text.into(),
            logprob,
            top: vec![(text.into(), logprob.unwrap_or(0.0))],
            text_offset: offset,
            layer: 30,
        }
    }

    #[test]
    fn both_shapes_hold_the_same_values() {
        let t = [token("Q", None, 0), token(":", Some(-0.5), 1)];
        let c = completion_json(&t);
        assert_eq!(c["tokens"], json!(["Q", ":"]));
        assert_eq!(c["token_logprobs"], json!([null, -0.5]));
        assert_eq!(c["top_logprobs"], json!([null, {":": -0.5}]));
        assert_eq!(c["text_offset"], json!([0, 1]));
        let chat = chat_json(&t[1..]);
        assert_eq!(chat["content"][0]["token"], ":");
        assert_eq!(chat["content"][0]["bytes"], json!([58]));
        assert_eq!(chat["content"][0]["top_logprobs"][0]["logprob"], -0.5);
        assert_eq!(layers(&t), vec![30, 30]);
    }
}
