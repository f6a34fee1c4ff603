//! The OpenAI fields beyond prompt and length, driven through the server with the vendored
//! task model, checked by value: usage in the stream's last chunk, penalties, logit bias,
//! logprobs (against the library's own log-softmax), echo, prompt scoring, refused fields,
//! `/tokenize` and `/detokenize`.

use adainfer::engine::logit_rules::log_softmax;
use adainfer::engine::Outputs;
use adainfer::serve::{AdaptiveOverride, Server};
use candle_core::IndexOp;
use serde_json::{json, Value};
use server_common::*;

mod server_common;

const PROMPT: &str = "Q: a gripping , funny and moving film .\nA:";

async fn dense_server() -> Server {
    let mut config = engine_config();
    config.apply(AdaptiveOverride::Dense);
    start(&config).await
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

async fn ids_of(client: &HttpClient, server: &Server, text: &str) -> Vec<u64> {
    let body = json!({"prompt": text, "add_special_tokens": false});
    let (status, v) = post(client, server, "/tokenize", &body).await;
    assert_eq!(status, 200, "{v}");
    v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_usage_penalties_and_logit_bias() {
    let server = dense_server().await;
    let client = client();
    let base = json!({"prompt": PROMPT, "max_tokens": 12, "ignore_eos": true});
    let (status, whole) = post(&client, &server, "/v1/completions", &base).await;
    assert_eq!(status, 200, "{whole}");
    // The final usage chunk of a stream reports what the whole answer reports.
    let mut streamed_body = base.clone();
    streamed_body["stream"] = json!(true);
    streamed_body["stream_options"] = json!({"include_usage": true});
    let url = format!("http://{}/v1/completions", server.addr);
    let (status, text) = send(&client, request("POST", &url, streamed_body.to_string())).await;
    assert_eq!(status, 200, "{text}");
    let (streamed_text, last) = streamed(&text, false);
    assert_eq!(streamed_text, whole["choices"][0]["text"].as_str().unwrap());
    assert_eq!(last["choices"], json!([]), "{last}");
    assert_eq!(last["usage"], whole["usage"]);
    assert_eq!(last["usage"]["completion_tokens"], 12);

    // Greedy decoding repeats tokens here; the penalties must change what it picks.
    let (_, logged) = post(
        &client,
        &server,
        "/v1/completions",
        &json!({"prompt": PROMPT, "max_tokens": 12, "ignore_eos": true, "logprobs": 0}),
    )
    .await;
    let tokens: Vec<String> = logged["choices"][0]["logprobs"]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let distinct: std::collections::HashSet<_> = tokens.iter().collect();
    assert!(
        distinct.len() < tokens.len(),
        "no repetition to penalize: {tokens:?}"
    );
    for field in [
        "frequency_penalty",
        "presence_penalty",
        "repetition_penalty",
    ] {
        let mut body = base.clone();
        body[field] = json!(2.0);
        let (status, v) = post(&client, &server, "/v1/completions", &body).await;
        assert_eq!(status, 200, "{v}");
        let penalized = v["choices"][0]["text"].as_str().unwrap();
        assert_ne!(
            penalized,
            whole["choices"][0]["text"].as_str().unwrap(),
            "{field}"
        );
    }
    // Frequency and presence count the answer only: the first token cannot change.
    let mut body = base.clone();
    body["presence_penalty"] = json!(2.0);
    body["logprobs"] = json!(0);
    let (_, v) = post(&client, &server, "/v1/completions", &body).await;
    assert_eq!(v["choices"][0]["logprobs"]["tokens"][0], json!(tokens[0]));

    // +100 forces a token, -100 bans one.
    let forced = ids_of(&client, &server, " negative").await;
    assert_eq!(forced.len(), 1, "{forced:?}");
    let body = json!({"prompt": PROMPT, "max_tokens": 3, "ignore_eos": true,
        "logit_bias": {forced[0].to_string(): 100}});
    let (_, v) = post(&client, &server, "/v1/completions", &body).await;
    assert_eq!(
        v["choices"][0]["text"], " negative negative negative",
        "{v}"
    );
    let first = ids_of(&client, &server, &tokens[0]).await;
    assert_eq!(first.len(), 1, "{first:?}");
    let body = json!({"prompt": PROMPT, "max_tokens": 1, "logprobs": 0,
        "logit_bias": {first[0].to_string(): -100}});
    let (_, v) = post(&client, &server, "/v1/completions", &body).await;
    let chosen = &v["choices"][0]["logprobs"]["tokens"][0];
    assert_ne!(chosen, &json!(tokens[0]), "{v}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_and_echo_are_the_models_own() {
    let server = dense_server().await;
    let client = client();
    // Chat: sorted alternatives, greedy picks the first, probabilities add up to at most 1.
    let body = json!({"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 4,
        "logprobs": true, "top_logprobs": 5});
    let (status, v) = post(&client, &server, "/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(
        content.len() as u64,
        v["usage"]["completion_tokens"].as_u64().unwrap()
    );
    let mut text = String::new();
    for entry in content {
        let lp = entry["logprob"].as_f64().unwrap();
        let top: Vec<f64> = entry["top_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["logprob"].as_f64().unwrap())
            .collect();
        assert_eq!(top.len(), 5);
        assert!(lp <= 0.0 && top.iter().all(|&l| l <= 0.0), "{entry}");
        assert!(top.windows(2).all(|w| w[0] >= w[1]), "{entry}");
        assert!(
            top.iter().map(|l| l.exp()).sum::<f64>() <= 1.0 + 1e-4,
            "{entry}"
        );
        assert_eq!(
            entry["top_logprobs"][0]["token"], entry["token"],
            "greedy: {entry}"
        );
        assert_eq!(top[0], lp);
        text.push_str(entry["token"].as_str().unwrap());
    }
    assert_eq!(
        text,
        v["choices"][0]["message"]["content"].as_str().unwrap()
    );

    // Completions with echo: every prompt token, the first without a logprob, offsets into
    // the returned text, values equal to the library's log-softmax over the prompt.
    let body = json!({"prompt": PROMPT, "max_tokens": 2, "echo": true, "logprobs": 3});
    let (status, v) = post(&client, &server, "/v1/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    let choice = &v["choices"][0];
    let text = choice["text"].as_str().unwrap();
    assert!(text.starts_with(PROMPT), "{text:?}");
    let lp = &choice["logprobs"];
    let tokens = lp["tokens"].as_array().unwrap();
    let (prompt_n, answer_n) = (
        v["usage"]["prompt_tokens"].as_u64().unwrap() as usize,
        v["usage"]["completion_tokens"].as_u64().unwrap() as usize,
    );
    assert_eq!(tokens.len(), prompt_n + answer_n);
    assert_eq!(lp["token_logprobs"][0], Value::Null);
    assert_eq!(lp["top_logprobs"][0], Value::Null);
    let offsets: Vec<usize> = lp["text_offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_u64().unwrap() as usize)
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
    let chars: Vec<char> = text.chars().collect();
    for (token, &offset) in tokens.iter().zip(&offsets) {
        let token: Vec<char> = token.as_str().unwrap().chars().collect();
        assert_eq!(
            &chars[offset..offset + token.len()],
            &token[..],
            "at {offset}"
        );
    }
    let joined: String = tokens.iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(joined, text);
    let engine = engine_config().load_engine().unwrap();
    let ids = engine.encode(PROMPT).unwrap();
    assert_eq!(ids.len(), prompt_n);
    let mut cache = engine.model.new_cache();
    let pass = engine
        .model
        .forward(&ids, &mut cache, None, Outputs::AllTokens)
        .unwrap();
    let served = &lp["token_logprobs"];
    for i in 1..prompt_n {
        let row: Vec<f32> = pass.logits.i(i - 1).unwrap().to_vec1().unwrap();
        let expected = log_softmax(&row)[ids[i] as usize] as f64;
        let got = served[i].as_f64().unwrap();
        assert!(
            (got - expected).abs() < 1e-4,
            "token {i}: {got} vs {expected}"
        );
        let top = lp["top_logprobs"][i].as_object().unwrap();
        assert!(top.values().all(|l| l.as_f64().unwrap() >= got - 1e-6) || top.len() == 3);
    }

    // max_tokens 0 with echo: the prompt's logprobs, nothing generated, the same values.
    let body = json!({"prompt": PROMPT, "max_tokens": 0, "echo": true, "logprobs": 1});
    let (status, z) = post(&client, &server, "/v1/completions", &body).await;
    assert_eq!(status, 200, "{z}");
    assert_eq!(z["choices"][0]["text"], PROMPT);
    assert_eq!(z["usage"]["completion_tokens"], 0);
    let zl = &z["choices"][0]["logprobs"]["token_logprobs"];
    assert_eq!(zl.as_array().unwrap().len(), prompt_n);
    assert_eq!(
        floats(&json!(zl.as_array().unwrap()[1..])),
        floats(&json!(served.as_array().unwrap()[1..prompt_n]))
    );
    // Token-id prompts (as lm-evaluation-harness sends) score the same.
    let body = json!({"prompt": [ids], "max_tokens": 0, "echo": true, "logprobs": 1});
    let (status, t) = post(&client, &server, "/v1/completions", &body).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["choices"][0]["logprobs"]["token_logprobs"], *zl);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_exit_logprobs_name_their_layer() {
    let server = start(&engine_config()).await;
    let client = client();
    let body = json!({"prompt": PROMPT, "max_tokens": 3, "logprobs": 2, "echo": true});
    let (status, v) = post(&client, &server, "/v1/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    let a = &v["adainfer"];
    assert_eq!(a["policy"], "gap_threshold", "{a}");
    let layers = floats(&a["logprob_layers"]);
    let prompt_n = v["usage"]["prompt_tokens"].as_u64().unwrap() as usize;
    assert_eq!(layers[prompt_n..], floats(&a["exit_layers"])[..], "{a}");
    assert!(
        layers.iter().any(|&l| l < 12.0),
        "no early exit to show: {a}"
    );
    assert!(a["logprobs_note"].as_str().unwrap().contains("exit layer"));
    // Self-speculative decoding cannot report them: a 400 saying what to use.
    let body = json!({"prompt": PROMPT, "logprobs": 1, "adainfer": {"mode": "self_speculative"}});
    let (status, v) = post(&client, &server, "/v1/completions", &body).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "adainfer.mode");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_fields_are_named_and_tokenize_matches_usage() {
    let server = dense_server().await;
    let client = client();
    let chat = |extra: Value| {
        let mut body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    for (field, value) in [
        (
            "tools",
            json!([{"type": "function", "function": {"name": "f"}}]),
        ),
        ("tool_choice", json!("auto")),
        ("functions", json!([{"name": "f"}])),
        ("function_call", json!("auto")),
        ("audio", json!({"voice": "alloy"})),
        ("modalities", json!(["text", "audio"])),
        ("prediction", json!({"type": "content", "content": "x"})),
        ("reasoning_effort", json!("low")),
        ("web_search_options", json!({})),
        ("response_format", json!({"type": "json_object"})),
        ("n", json!(2)),
        ("store", json!(true)),
    ] {
        let (status, v) = post(
            &client,
            &server,
            "/v1/chat/completions",
            &chat(json!({field: value})),
        )
        .await;
        assert_eq!(status, 400, "{field}: {v}");
        assert_eq!(v["error"]["param"], field, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{v}"
        );
    }
    let (status, v) = post(
        &client,
        &server,
        "/v1/completions",
        &json!({"prompt": "x", "suffix": "y"}),
    )
    .await;
    assert_eq!(
        (status, v["error"]["param"].clone()),
        (400, json!("suffix"))
    );
    let (status, v) = post(
        &client,
        &server,
        "/v1/completions",
        &json!({"prompt": "x", "wat": 1}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("`wat`"),
        "{v}"
    );
    // Accepted: harmless values, "default" as the model, text response format, a seed.
    let ok = chat(
        json!({"model": "default", "response_format": {"type": "text"}, "seed": 3,
        "tools": [], "tool_choice": "none", "store": false, "user": "u", "metadata": {"a": "b"}}),
    );
    let (status, v) = post(&client, &server, "/v1/chat/completions", &ok).await;
    assert_eq!(status, 200, "{v}");

    // /tokenize counts what usage counts; /detokenize gives the text back.
    let (_, done) = post(
        &client,
        &server,
        "/v1/completions",
        &json!({"prompt": PROMPT, "max_tokens": 1}),
    )
    .await;
    let (status, t) = post(&client, &server, "/tokenize", &json!({"prompt": PROMPT})).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["count"], done["usage"]["prompt_tokens"]);
    assert_eq!(t["max_model_len"], 2048);
    let (_, chat_done) = post(&client, &server, "/v1/chat/completions", &chat(json!({}))).await;
    let (_, tm) = post(
        &client,
        &server,
        "/tokenize",
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(tm["count"], chat_done["usage"]["prompt_tokens"], "{tm}");
    let (status, d) = post(
        &client,
        &server,
        "/detokenize",
        &json!({"tokens": t["tokens"]}),
    )
    .await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["prompt"], PROMPT);
    let (status, d) = post(
        &client,
        &server,
        "/detokenize",
        &json!({"tokens": [1, 4096]}),
    )
    .await;
    assert_eq!(
        (status, d["error"]["param"].clone()),
        (400, json!("tokens")),
        "{d}"
    );
    let (status, _) = post(&client, &server, "/tokenize", &json!({"text": "x"})).await;
    assert_eq!(status, 400);
    server.stop().await.unwrap();
}
