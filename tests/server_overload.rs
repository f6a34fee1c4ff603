//! The server under load it cannot take: more clients than its queue holds, and clients that
//! walk away mid-stream. The overflow gets clean 503s, abandoned streams free the engine, memory
//! stays bounded, and the server answers normally afterwards.

mod server_common;

use http_body_util::BodyExt;
use serde_json::json;
use server_common::*;
use std::time::Duration;

fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
}

/// A normal request is answered.
async fn still_serves(client: &HttpClient, server: &adainfer::serve::Server) {
    let body = json!({"prompt": "Q: hello\nA:", "max_tokens": 2});
    let (status, reply) = post(client, server, "/v1/completions", &body).await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_clients_on_a_queue_of_64_get_503s_and_the_server_recovers() {
    let mut config = engine_config();
    config.scheduler.queue_capacity = 64;
    let server = start(&config).await;
    let client = client();
    let rss_before = peak_rss_kb();
    // Long answers keep the engine busy while the rest arrive: the queue must overflow.
    let body = json!({"prompt": "Q: a gripping, funny film\nA:", "max_tokens": 48,
                      "ignore_eos": true, "adainfer": {"policy": "dense"}});
    let tasks: Vec<_> = (0..300)
        .map(|_| {
            let (client, body) = (client.clone(), body.clone());
            let url = format!("http://{}/v1/completions", server.addr);
            tokio::spawn(
                async move { send(&client, request("POST", &url, body.to_string())).await },
            )
        })
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for task in tasks {
        let (status, text) = tokio::time::timeout(Duration::from_secs(600), task)
            .await
            .expect("every client is answered within 10 minutes")
            .unwrap();
        match status {
            200 => ok += 1,
            503 => {
                assert!(text.contains("queue is full"), "{text}");
                refused += 1;
            }
            other => panic!("status {other}: {text}"),
        }
    }
    println!("{ok} answered, {refused} refused with 503");
    assert!(
        refused > 0,
        "300 clients never filled a queue of 64 ({ok} answered)"
    );
    assert!(
        ok >= 64,
        "only {ok} answered: the queue's 64 should all be served"
    );
    // Recovered: the queue is empty and a normal request is answered.
    let (status, metrics) = get(&client, &server, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(metric(&metrics, "adainfer_queue_depth"), 0.0);
    still_serves(&client, &server).await;
    // 300 requests of ≤ 48 tokens on a 12-layer model: KV caches and buffers, not leaks.
    if let (Some(before), Some(after)) = (rss_before, peak_rss_kb()) {
        let grown_mb = after.saturating_sub(before) / 1024;
        println!("peak RSS {} MB → {} MB", before / 1024, after / 1024);
        assert!(grown_mb < 1024, "peak RSS grew by {grown_mb} MB under load");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_drops_its_stream_frees_the_engine() {
    let server = start(&engine_config()).await;
    let client = client();
    let url = format!("http://{}/v1/completions", server.addr);
    let body = json!({"prompt": "Q: a gripping, funny film\nA:", "max_tokens": 256,
                      "ignore_eos": true, "stream": true, "adainfer": {"policy": "dense"}});
    for _ in 0..3 {
        let response = client
            .request(request("POST", &url, body.to_string()))
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let mut stream = response.into_body();
        // Read the first chunk, then hang up.
        let first = stream.frame().await.expect("a first chunk").unwrap();
        assert!(first.data_ref().is_some_and(|d| !d.is_empty()));
        drop(stream);
    }
    // The abandoned jobs are cancelled, not decoded to the end: the counter says so soon.
    let mut cancelled = 0.0;
    for _ in 0..100 {
        let (_, metrics) = get(&client, &server, "/metrics").await;
        cancelled = metric(&metrics, "adainfer_requests_cancelled_total");
        if cancelled >= 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cancelled, 3.0, "three dropped streams, three cancellations");
    still_serves(&client, &server).await;
}
