//! Clients that take their time: headers or a body that trickle in (slow-loris), connections that
//! send nothing, more of them than the server keeps open. Each is cut off within its timeout, its
//! connection slot comes back, memory stays bounded, and a normal client is served meanwhile.

mod server_common;

use server_common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT_SECS: f64 = 1.0;

async fn slow_server(max_connections: usize) -> adainfer::serve::Server {
    let mut config = engine_config();
    config.scheduler.max_connections = max_connections;
    config.scheduler.header_timeout_secs = TIMEOUT_SECS;
    config.scheduler.body_timeout_secs = TIMEOUT_SECS;
    start(&config).await
}

/// Read until the server closes the connection (or `limit` passes); what it sent.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None, // still open at the limit
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&reply).into_owned()),
            Ok(Ok(n)) => reply.extend_from_slice(&buf[..n]),
        }
    }
}

/// A complete request on a fresh connection, answered within `limit`.
async fn normal_request(addr: SocketAddr, limit: Duration) -> String {
    let body = r#"{"prompt": "Q: hello\nA:", "max_tokens": 2}"#;
    let request = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    read_until_closed(&mut stream, limit)
        .await
        .expect("a normal client is answered while slow ones wait")
}

/// Send `head`, then one byte of `drip` every 100 ms for up to 10 s or until the server closes;
/// how long the server kept the connection and what it answered.
async fn trickle(addr: SocketAddr, head: String, drip: u8) -> (Duration, String) {
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 4096];
    let mut reply = Vec::new();
    while start.elapsed() < Duration::from_secs(10) {
        if stream.write_all(&[drip]).await.is_err() {
            break; // the server has closed its side
        }
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => reply.extend_from_slice(&buf[..n]),
        }
    }
    (
        start.elapsed(),
        String::from_utf8_lossy(&reply).into_owned(),
    )
}

/// Cut off within the timeout, with a margin for a loaded machine.
fn assert_cut_off(held: Duration, what: &str) {
    println!("{what} was cut off after {held:?}");
    assert!(
        held < Duration::from_secs_f64(TIMEOUT_SECS + 3.0),
        "{what} held its connection {held:?} (timeout {TIMEOUT_SECS} s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_headers_are_cut_off_and_their_slot_serves_the_next_client() {
    let server = slow_server(2).await;
    // Two slow-loris clients take both connection slots...
    let head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let slow: Vec<_> = (0..2)
        .map(|_| tokio::spawn(trickle(server.addr, head.into(), b'a')))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ...so a normal client waits in the backlog until the header timeout frees one.
    let waited = Instant::now();
    let reply = normal_request(server.addr, Duration::from_secs(20)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    println!(
        "a normal client behind two slow-loris ones waited {:?}",
        waited.elapsed()
    );
    for task in slow {
        let (held, reply) = task.await.unwrap();
        assert_cut_off(held, "a trickling header");
        assert!(
            !reply.contains(" 200 "),
            "a trickled request was answered: {reply}"
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_body_gets_408_naming_the_setting() {
    let server = slow_server(8).await;
    let head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Content-Length: 1000\r\n\r\n{\"prompt\": \"";
    let (held, reply) = trickle(server.addr, head.into(), b'a').await;
    assert_cut_off(held, "a trickling body");
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("body_timeout_secs"), "{reply}");
    let reply = normal_request(server.addr, Duration::from_secs(20)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_silent_connections_are_closed_and_memory_stays_bounded() {
    let server = slow_server(64).await;
    let rss_before = peak_rss_kb();
    let start = Instant::now();
    // Each connects, sends half a request line, and goes quiet.
    let mut silent = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(b"POST /v1/compl").await.unwrap();
        silent.push(stream);
    }
    // 64 at a time are accepted and each is cut off after the timeout: about four rounds.
    let rounds = (200f64 / 64.0).ceil() * (TIMEOUT_SECS + 3.0);
    let closing: Vec<_> = silent
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                read_until_closed(&mut stream, Duration::from_secs_f64(rounds + 10.0)).await
            })
        })
        .collect();
    for task in closing {
        assert!(
            task.await.unwrap().is_some(),
            "a silent connection was still open after {rounds} s"
        );
    }
    println!(
        "200 silent connections were all closed after {:?}",
        start.elapsed()
    );
    let reply = normal_request(server.addr, Duration::from_secs(20)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    if let (Some(before), Some(after)) = (rss_before, peak_rss_kb()) {
        println!("peak RSS {before} kB -> {after} kB");
        assert!(
            after - before < 256 * 1024,
            "peak RSS grew from {before} to {after} kB"
        );
    }
    server.stop().await.unwrap();
}
