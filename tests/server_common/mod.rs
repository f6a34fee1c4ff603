//! Helpers for the server tests: an in-process server on loopback and a small HTTP client.
#![allow(dead_code)]

use adainfer::serve::{hooks_for, EngineConfig, Server};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::path::PathBuf;

#[path = "../common/mod.rs"]
mod common;

pub use common::shared;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn engine_config() -> EngineConfig {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("engine-configs/tiny-llama.toml");
    EngineConfig::load(&path).unwrap()
}

pub async fn start(config: &EngineConfig) -> Server {
    let engine = config.load_engine().unwrap();
    let hooks = hooks_for(config, &engine).unwrap();
    Server::start(config, engine, hooks, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn request(method: &str, url: &str, body: impl Into<Bytes>) -> hyper::Request<Full<Bytes>> {
    hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap()
}

/// Status and body text of a whole response.
pub async fn send(client: &HttpClient, req: hyper::Request<Full<Bytes>>) -> (u16, String) {
    let response = client.request(req).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

pub async fn post(client: &HttpClient, server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let url = format!("http://{}{path}", server.addr);
    let (status, text) = send(client, request("POST", &url, body.to_string())).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub async fn get(client: &HttpClient, server: &Server, path: &str) -> (u16, String) {
    send(
        client,
        request("GET", &format!("http://{}{path}", server.addr), ""),
    )
    .await
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

/// The text a stream carried, and its last JSON chunk.
pub fn streamed(body: &str, chat: bool) -> (String, Value) {
    let data = sse_data(body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text = chunks
        .iter()
        .map(|c| {
            let choice = &c["choices"][0];
            let piece = if chat {
                &choice["delta"]["content"]
            } else {
                &choice["text"]
            };
            piece.as_str().unwrap_or("").to_string()
        })
        .collect();
    (text, chunks.last().unwrap().clone())
}

pub fn sst2_sentences(n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(shared().join("data/sst2/dev.tsv")).unwrap();
    text.lines()
        .skip(1)
        .take(n)
        .map(|l| l.split('\t').next().unwrap().trim().to_string())
        .collect()
}

/// Fail unless the Prometheus text holds exactly this line.
pub fn assert_metric(metrics: &str, line: &str) {
    assert!(
        metrics.lines().any(|l| l == line),
        "missing {line:?} in\n{metrics}"
    );
}

/// The value of the first sample whose line starts with `prefix`.
pub fn metric_value(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Peak resident memory of this process so far (kB), from /proc (Linux only).
pub fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
