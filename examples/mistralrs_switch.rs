//! An app written against mistral.rs's request API, switching engines with one line.
//!
//! ```text
//! cargo run --release --features mistralrs --example mistralrs_switch -- adainfer [ENGINE.toml]
//! cargo run --release --features mistralrs --example mistralrs_switch -- stock [ENGINE.toml]
//! ```
//! Everything except the line that picks the engine is ordinary mistral.rs client code: build a
//! `Request::Normal`, send it, read the `Response` on the request's own channel. adainfer reads
//! the engine config (default `engine-configs/tiny-llama.toml`, AdaInfer on by its
//! `[adaptive]` section); stock mistral.rs loads the same config's model directory.

use adainfer::mistralrs::{AdaInferFront, StockMistralRs, StockOptions};
use adainfer::serve::EngineConfig;
use anyhow::{bail, Result};
use mistralrs_core::{NormalRequest, Request, RequestMessage, Response, SamplingParams};
use std::any::Any;
use std::path::PathBuf;
use tokio::sync::mpsc::{channel, Sender};

/// Stock mistral.rs: the sender a mistral.rs app already uses (`MistralRs::get_sender`).
fn stock(config: &EngineConfig) -> Result<(Sender<Request>, Box<dyn Any>)> {
    let engine = StockMistralRs::load(&config.model.path, &StockOptions::default())?;
    Ok((engine.sender()?, Box::new(engine)))
}

/// adainfer behind the same request API, adaptive or dense as the engine config says.
fn adainfer(config: &EngineConfig) -> Result<(Sender<Request>, Box<dyn Any>)> {
    let front = AdaInferFront::from_config(config)?;
    Ok((front.sender(), Box::new(front)))
}

fn ask(sender: &Sender<Request>, prompt: &str, id: usize) -> Result<String> {
    let (tx, mut rx) = channel(16);
    let mut sampling = SamplingParams::deterministic();
    sampling.max_len = Some(8);
    let message = RequestMessage::Completion {
        text: prompt.to_string(),
        echo_prompt: false,
        best_of: None,
    };
    let request = NormalRequest::new_simple(message, sampling, tx, id, None, None);
    sender.blocking_send(Request::Normal(Box::new(request)))?;
    match rx.blocking_recv() {
        Some(Response::CompletionDone(done)) => Ok(done.choices[0].text.clone()),
        Some(Response::ValidationError(e)) | Some(Response::InternalError(e)) => bail!("{e}"),
        Some(_) => bail!("unexpected response kind"),
        None => bail!("the engine hung up"),
    }
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "adainfer".into());
    let path = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("engine-configs/tiny-llama.toml"));
    let config = EngineConfig::load(&path)?;

    // The one line that picks the engine (the second value keeps it alive):
    let (sender, _engine) = if which == "stock" {
        stock(&config)?
    } else {
        adainfer(&config)?
    };

    for (id, sentence) in ["a gripping, funny film", "dull and far too long"]
        .iter()
        .enumerate()
    {
        let answer = ask(&sender, &format!("Q: {sentence}\nA:"), id)?;
        println!("[{which}] {sentence:?} -> {answer:?}");
    }
    Ok(())
}
