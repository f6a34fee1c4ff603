//! The OpenAI-compatible server on loopback, in-process, with the vendored task model: many
//! concurrent requests answered exactly as the library's dense generation, streaming, bad input,
//! and clients that go away mid-stream.

use adainfer::engine::SamplingParams;
use adainfer::serve::openai::ChatMessage;
use adainfer::serve::template::plain_prompt;
use adainfer::serve::AdaptiveOverride;
use adainfer::Engine;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use server_common::*;
use std::time::Duration;

mod server_common;

const MAX_TOKENS: usize = 6;

/// The shipped engine config with AdaInfer switched off as `--dense` does.
fn dense_config() -> adainfer::serve::EngineConfig {
    let mut config = engine_config();
    config.apply(AdaptiveOverride::Dense);
    config
}

fn dense_text(engine: &Engine, prompt: &str) -> String {
    engine
        .generate_text(prompt, MAX_TOKENS, SamplingParams::greedy())
        .unwrap()
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_match_dense_generation() {
    let config = dense_config();
    let server = start(&config).await;
    let engine = config.load_engine().unwrap();
    // 64 requests: completions and chats, every third one streamed.
    let cases: Vec<(usize, Value, String)> = sst2_sentences(32)
        .into_iter()
        .flat_map(|s| {
            let prompt = format!("Q: {s}\nA:");
            let messages = vec![ChatMessage { role: "user".into(), content: s, name: None }];
            let chat_prompt = plain_prompt(&messages);
            [
                (json!({"prompt": prompt, "max_tokens": MAX_TOKENS}), dense_text(&engine, &prompt)),
                (
                    json!({"messages": messages, "max_tokens": MAX_TOKENS, "model": "tiny-llama-sst2-agnews"}),
                    dense_text(&engine, &chat_prompt),
                ),
            ]
        })
        .enumerate()
        .map(|(i, (mut body, expected))| {
            body["stream"] = json!(i % 3 == 0);
            (i, body, expected)
        })
        .collect();
    assert_eq!(cases.len(), 64);
    let client = client();
    let url = format!("http://{}", server.addr);
    let tasks: Vec<_> = cases
        .into_iter()
        .map(|(i, body, expected)| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let chat = body.get("messages").is_some();
                let path = if chat {
                    "/v1/chat/completions"
                } else {
                    "/v1/completions"
                };
                let req = request("POST", &format!("{url}{path}"), body.to_string());
                let (status, text) = send(&client, req).await;
                assert_eq!(status, 200, "request {i}: {text}");
                let (answer, last) = if body["stream"] == json!(true) {
                    streamed(&text, chat)
                } else {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    let choice = &v["choices"][0];
                    let answer = if chat {
                        &choice["message"]["content"]
                    } else {
                        &choice["text"]
                    };
                    (answer.as_str().unwrap().to_string(), v)
                };
                assert_eq!(answer, expected, "request {i}");
                assert_eq!(last["adainfer"]["policy"], "dense", "request {i}");
                let exits = last["adainfer"]["exit_layers"].as_array().unwrap().clone();
                assert!(
                    !exits.is_empty() && exits.iter().all(|l| l == 12),
                    "request {i}: {last}"
                );
                assert_eq!(last["adainfer"]["layers_saved"], 0);
                let tokens = last["usage"]["completion_tokens"].as_u64().unwrap();
                assert!(tokens as usize <= MAX_TOKENS, "request {i}");
            })
        })
        .collect();
    let all = async {
        for task in tasks {
            task.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(600), all)
        .await
        .expect("64 requests did not finish within 10 minutes");
    let (status, metrics) = get(&client, &server, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "adainfer_requests_total{policy=\"dense\",mode=\"dense\"} 64",
        "adainfer_http_responses_total{endpoint=\"/v1/completions\",status=\"200\"} 32",
        "adainfer_layers_saved_total{policy=\"dense\",mode=\"dense\"} 0",
        "adainfer_average_exit_layer{policy=\"dense\",mode=\"dense\"} 12",
        "adainfer_queue_depth 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
    // 64 dense requests sent at once queue up behind the first: the worker decodes waiting
    // dense requests together (every answer above still equals the dense library's).
    let batched = metric_value(&metrics, "adainfer_batched_requests_total").unwrap_or(0.0);
    assert!(batched >= 2.0, "no batch ran:\n{metrics}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clean_errors_and_the_server_keeps_serving() {
    let mut config = dense_config();
    config.scheduler.max_prompt_tokens = Some(16);
    config.scheduler.max_body_bytes = 4096;
    let server = start(&config).await;
    let client = client();
    let long_prompt =
        json!({"prompt": "a charming and often affecting journey . ".repeat(8)}).to_string();
    let long_stream =
        json!({"prompt": "a charming and often affecting journey . ".repeat(8), "stream": true});
    let huge_body = json!({"prompt": "x".repeat(5000)}).to_string();
    let chat = "/v1/chat/completions";
    let completions = "/v1/completions";
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "POST",
            completions,
            b"{not json".to_vec(),
            400,
            "invalid request body",
        ),
        (
            "POST",
            completions,
            b"\xff\xfe{".to_vec(),
            400,
            "invalid request body",
        ),
        (
            "POST",
            completions,
            br#"{"prompt":"hi","logprobz":true}"#.to_vec(),
            400,
            "unknown field `logprobz`",
        ),
        (
            "POST",
            chat,
            br#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":100000}"#.to_vec(),
            400,
            "max_tokens = 100000",
        ),
        (
            "POST",
            chat,
            br#"{"messages":[{"role":"user","content":"hi","tool_calls":[]}]}"#.to_vec(),
            400,
            "tool_calls",
        ),
        (
            "POST",
            completions,
            long_prompt.into_bytes(),
            400,
            "at most 16",
        ),
        (
            "POST",
            completions,
            long_stream.to_string().into_bytes(),
            400,
            "at most 16",
        ),
        (
            "POST",
            completions,
            huge_body.into_bytes(),
            413,
            "larger than 4096 bytes (scheduler.max_body_bytes)",
        ),
        (
            "POST",
            completions,
            br#"{"prompt":"hi","adainfer":{"policy":"gap_threshold"}}"#.to_vec(),
            400,
            "dense only",
        ),
        (
            "POST",
            completions,
            br#"{"prompt":"hi","model":"gpt-4"}"#.to_vec(),
            404,
            "gpt-4",
        ),
        ("GET", "/v1/nothing", Vec::new(), 404, "no such endpoint"),
        // Absurd values (issue #14): each a 4xx naming the problem, on the chat endpoint so the
        // completions counters below stay as they are.
        (
            "POST",
            chat,
            br#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":-1}"#.to_vec(),
            400,
            "max_tokens",
        ),
        (
            "POST",
            chat,
            br#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":1000000000000}"#.to_vec(),
            400,
            "max_tokens",
        ),
        (
            "POST",
            chat,
            br#"{"messages":[{"role":"user","content":"hi"}],"n":100000}"#.to_vec(),
            400,
            "n = 1",
        ),
        (
            "POST",
            chat,
            format!(
                r#"{{"messages":[{{"role":"user","content":"hi"}}],"stop":[{}]}}"#,
                vec![r#""x""#; 10_000].join(",")
            )
            .into_bytes(),
            413,
            "larger than 4096 bytes (scheduler.max_body_bytes)",
        ),
        (
            "POST",
            chat,
            format!(
                r#"{{"messages":[{{"role":"user","content":"hi"}}],"stop":[{}]}}"#,
                vec![r#""x""#; 5].join(",")
            )
            .into_bytes(),
            400,
            "stop",
        ),
        (
            "POST",
            chat,
            format!("{}{}", "[".repeat(1500), "]".repeat(1500)).into_bytes(),
            400,
            "invalid request body",
        ),
        ("POST", chat, Vec::new(), 400, "invalid request body"),
    ];
    for (method, path, body, status, needle) in cases {
        let url = format!("http://{}{path}", server.addr);
        let (got, text) = send(&client, request(method, &url, body)).await;
        assert_eq!(got, status, "{method} {path}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{path}: {message:?} lacks {needle:?}"
        );
        assert!(v["error"]["type"].is_string(), "{text}");
    }
    let (status, v) = post(
        &client,
        &server,
        completions,
        &json!({"prompt": "Q: fine\nA:", "max_tokens": 2}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["usage"]["prompt_tokens"].as_u64().map(|n| n > 0),
        Some(true)
    );
    let (status, health) = get(&client, &server, "/health").await;
    assert_eq!((status, health.as_str()), (200, r#"{"status":"ok"}"#));
    let (status, models) = get(&client, &server, "/v1/models").await;
    assert_eq!(status, 200);
    let models: Value = serde_json::from_str(&models).unwrap();
    assert_eq!(models["data"][0]["id"], "tiny-llama-sst2-agnews");
    let (_, metrics) = get(&client, &server, "/metrics").await;
    let line = "adainfer_http_responses_total{endpoint=\"/v1/completions\",status=\"400\"} 6";
    assert!(
        metrics.lines().any(|l| l == line),
        "missing {line:?} in\n{metrics}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_stream_stops_its_generation() {
    let mut config = dense_config();
    config.scheduler.max_tokens = 2000;
    let server = start(&config).await;
    let client = client();
    let url = format!("http://{}/v1/completions", server.addr);
    // Seconds of work (the model would say end-of-text after ~50 tokens; ignore_eos goes on).
    let body = json!({"prompt": "Q: it 's a charming and often affecting journey .\nA:", "max_tokens": 2000, "stream": true, "ignore_eos": true});
    let response = client
        .request(request("POST", &url, body.to_string()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.into_body();
    let first = stream.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(first.starts_with(b"data: {"), "{first:?}");
    drop(stream);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, metrics) = get(&client, &server, "/metrics").await;
        if metrics
            .lines()
            .any(|l| l == "adainfer_requests_cancelled_total 1")
        {
            assert!(
                metrics
                    .lines()
                    .any(|l| l == "adainfer_completion_tokens_total 0"),
                "{metrics}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never noticed:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, v) = post(
        &client,
        &server,
        "/v1/completions",
        &json!({"prompt": "Q: fine\nA:", "max_tokens": 1}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_strings_end_the_answer_whole_or_streamed() {
    let config = dense_config();
    let server = start(&config).await;
    let engine = config.load_engine().unwrap();
    let client = client();
    let prompt = "Q: a gripping , funny and moving film .\nA:";
    let full = engine
        .generate_text(prompt, 8, SamplingParams::greedy())
        .unwrap()
        .1;
    let cut = full
        .find("\n\n")
        .expect("the model ends its answer with a blank line");
    for stream in [false, true] {
        let body =
            json!({"prompt": prompt, "max_tokens": 8, "stop": ["\n\n", "zzz"], "stream": stream});
        let url = format!("http://{}/v1/completions", server.addr);
        let (status, text) = send(&client, request("POST", &url, body.to_string())).await;
        assert_eq!(status, 200, "{text}");
        let (answer, last) = if stream {
            streamed(&text, false)
        } else {
            let v: Value = serde_json::from_str(&text).unwrap();
            (v["choices"][0]["text"].as_str().unwrap().to_string(), v)
        };
        assert_eq!(answer, full[..cut], "stream: {stream}");
        assert_eq!(last["choices"][0]["finish_reason"], "stop", "{last}");
    }
    server.stop().await.unwrap();
}

/// The shipped GGUF engine config: the model's own chat template (from the file) formats a chat
/// request, and the answer is the model's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_gguf_file_with_its_chat_template() {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("engine-configs/smollm2-135m-instruct.toml");
    let config = adainfer::serve::EngineConfig::load(&path).unwrap();
    let server = start(&config).await;
    let body = json!({
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 16,
    });
    let (status, reply) = post(&client(), &server, "/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{reply}");
    let text = reply["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(text, "The capital of France is Paris.");
    assert_eq!(
        reply["usage"]["prompt_tokens"], 37,
        "SmolLM2's template adds its system prompt"
    );
}
