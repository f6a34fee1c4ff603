//! Serving: the engine config, and an OpenAI-compatible HTTP server over one engine.
//!
//! ```text
//! HTTP handlers (tokio) ──try_send──▶ bounded queue ──▶ engine worker (one thread, owns the model)
//!        ▲                                                     │
//!        └──────────── per-request event channel ◀─────────────┘  Started, Text…, Done | Failed
//! ```
//! The handlers parse, check and template requests; the worker tokenizes, runs the hook the
//! request's policy asks for (dense requests waiting together run as one batch) and streams text
//! back. See `adainfer serve --help`.

mod batch;
pub mod config;
pub mod error;
mod fields;
mod http;
mod input;
mod listen;
mod logprobs;
pub mod metrics;
pub mod openai;
pub mod options;
pub mod policy;
mod reply;
pub mod template;
mod text_stream;
mod tokenize;
pub mod worker;

pub use config::{AdaptiveOverride, EngineConfig};
pub use error::ApiError;
pub use policy::{hooks_for, DenseOnly, HookFactory, DENSE};

use crate::Engine;
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A running server: bound, serving, with its engine worker.
pub struct Server {
    pub addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    worker: std::thread::JoinHandle<()>,
}

impl Server {
    /// Bind `addr` (port 0 picks a free port) and serve `engine` as `config` says.
    pub async fn start(
        config: &EngineConfig,
        engine: Engine,
        hooks: Box<dyn HookFactory>,
        addr: SocketAddr,
    ) -> Result<Self> {
        let template =
            template::ChatTemplate::for_model(&engine.chat, config.model.chat_template.as_deref())?;
        let scheduler = &config.scheduler;
        let context = engine.config().max_position_embeddings;
        let rules = openai::RequestRules {
            model_name: config.model_name(),
            max_tokens: scheduler.max_tokens,
            default_max_tokens: scheduler.default_max_tokens,
            sampling: config.sampling.clone(),
            vocab_size: engine.config().vocab_size,
        };
        let tokenizer = engine.tokenizer.clone();
        let metrics = Arc::new(metrics::Metrics::default());
        let (queue, jobs) = mpsc::channel(scheduler.queue_capacity);
        let worker = worker::Worker {
            engine,
            hooks,
            mode: config.adaptive.mode_spec(),
            max_prompt_tokens: scheduler.max_prompt_tokens.unwrap_or(context).min(context),
            max_batch: scheduler.max_batch,
            metrics: metrics.clone(),
        }
        .spawn(jobs)?;
        let shared = Arc::new(http::Shared {
            queue,
            rules,
            template,
            metrics,
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            next_id: Default::default(),
            tokenizer,
            max_model_len: context,
        });
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let addr = listener.local_addr()?;
        let app = http::router(
            shared,
            http::BodyLimits {
                max_bytes: scheduler.max_body_bytes,
                timeout: Duration::from_secs_f64(scheduler.body_timeout_secs),
            },
        );
        let limits = listen::ConnectionLimits {
            max_connections: scheduler.max_connections,
            header_timeout: Duration::from_secs_f64(scheduler.header_timeout_secs),
        };
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(listen::serve(listener, app, limits, stop));
        Ok(Self {
            addr,
            shutdown,
            task,
            worker,
        })
    }

    /// Serve until `signal` completes, then stop taking connections and finish the open ones.
    pub async fn run_until(mut self, signal: impl std::future::Future<Output = ()>) -> Result<()> {
        tokio::select! {
            _ = signal => {}
            result = &mut self.task => {
                result.context("the server task failed")?.context("the server stopped")?;
                bail!("the server stopped on its own");
            }
        }
        self.stop().await
    }

    /// Stop: finish open connections, then let the worker drain and exit.
    pub async fn stop(self) -> Result<()> {
        let _ = self.shutdown.send(());
        self.task
            .await
            .context("the server task failed")?
            .context("the server stopped with an error")?;
        // The router (and with it the queue's sender) is gone now, so the worker ends.
        tokio::task::spawn_blocking(move || self.worker.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the engine worker panicked"))?;
        Ok(())
    }
}
