//! Stock mistral.rs (mistralrs-core, unmodified) on a local Hugging Face directory or GGUF file: the engine
//! users run today, kept beside ours as the benchmark baseline and the eval's `mistralrs` arm.
//!
//! Loading is purely local: a model id that is an existing directory makes mistral.rs read every
//! file from it (no hub listing, no download), and no token source is used.

use anyhow::{anyhow, bail, Context, Result};
use mistralrs_core::{
    CompletionResponse, Constraint, DefaultSchedulerMethod, DeviceMapSetting, GGUFLoaderBuilder,
    GGUFSpecificConfig, Loader, MistralRs, MistralRsBuilder, ModelDType, NormalLoaderBuilder,
    NormalRequest, NormalSpecificConfig, Request, RequestMessage, Response, SamplingParams,
    SchedulerConfig, StopTokens, TokenSource,
};
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::{channel, Sender};

/// How the stock engine is set up.
#[derive(Debug, Clone)]
pub struct StockOptions {
    /// Stop a generation at the model's eos tokens (off for benchmarks and the HF reference
    /// continuations, which run a fixed number of tokens).
    pub stop_at_eos: bool,
}

impl Default for StockOptions {
    fn default() -> Self {
        Self { stop_at_eos: true }
    }
}

/// One finished stock generation.
#[derive(Debug, Clone)]
pub struct StockGeneration {
    /// Generated token ids (filled only when asked for: mistral.rs reports them through
    /// logprobs, which costs a vocabulary sort per step).
    pub tokens: Vec<u32>,
    /// The first step's token ids in logit order, as many as were asked for.
    pub first_ranking: Vec<u32>,
    pub text: String,
    pub completion_tokens: usize,
    pub finish_reason: String,
    /// Wall-clock from sending the request to the final response.
    pub seconds: f64,
}

/// A loaded stock mistral.rs engine (CPU, f32) with one model.
pub struct StockMistralRs {
    runner: Arc<MistralRs>,
    vocab_size: usize,
}

fn local_id(path: &Path) -> Result<String> {
    let path = path
        .canonicalize()
        .with_context(|| format!("cannot resolve model path {}", path.display()))?;
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("model path {} is not valid UTF-8", path.display()))
}

/// mistral.rs's loader for a Hugging Face directory, and the vocabulary size.
fn directory_loader(dir: &Path) -> Result<(Box<dyn Loader>, usize)> {
    if !dir.join("config.json").is_file() {
        bail!(
            "{} is not a model directory: config.json is missing",
            dir.display()
        );
    }
    let vocab_size = crate::engine::ModelConfig::from_file(&dir.join("config.json"))?.vocab_size;
    let loader = NormalLoaderBuilder::new(
        NormalSpecificConfig::default(),
        None,
        None,
        Some(local_id(dir)?),
        false,
        None,
    )
    .build(None)
    .context("mistral.rs cannot build a loader for this config.json")?;
    Ok((loader, vocab_size))
}

/// mistral.rs's GGUF loader for one local file (tokenizer and template from the file).
fn gguf_loader(file: &Path) -> Result<(Box<dyn Loader>, usize)> {
    let ours = crate::engine::gguf::GgufFile::open(file)?;
    let vocab_size = crate::engine::gguf::config::model_config(&ours)?.vocab_size;
    // mistral.rs unwraps an unknown architecture inside its loader thread: ask first.
    let arch = ours.string("general.architecture")?.unwrap_or_default();
    if mistralrs_core::GGUFArchitecture::from_value(arch).is_err() {
        bail!("stock mistral.rs has no GGUF loader for architecture {arch:?}");
    }
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("GGUF file name {} is not valid UTF-8", file.display()))?;
    let loader = GGUFLoaderBuilder::new(
        None,
        None,
        local_id(dir)?,
        vec![name.to_string()],
        GGUFSpecificConfig::default(),
        false,
        None,
    )
    .build();
    Ok((loader, vocab_size))
}

impl StockMistralRs {
    /// Load `path` on the CPU: a directory (config.json, *.safetensors, tokenizer.json) in f32,
    /// or a `.gguf` file through mistral.rs's GGUF loader (weights in their GGUF types).
    pub fn load(path: &Path, options: &StockOptions) -> Result<Self> {
        let (loader, vocab_size) = if crate::engine::gguf::is_gguf_path(path) {
            gguf_loader(path)?
        } else {
            directory_loader(path)?
        };
        let dir = path;
        let pipeline = loader
            .load_model_from_hf(
                None,
                TokenSource::None,
                &ModelDType::F32,
                &candle_core::Device::Cpu,
                true,
                DeviceMapSetting::dummy(),
                None,
                None,
            )
            .with_context(|| format!("mistral.rs cannot load {}", dir.display()))?;
        let scheduler = SchedulerConfig::DefaultScheduler {
            method: DefaultSchedulerMethod::Fixed(NonZeroUsize::MIN),
        };
        // The prefix cache would let a repeated prompt skip its prefill: off, so every request
        // (benchmark repeats included) does the full work, as ours does.
        let builder = MistralRsBuilder::new(pipeline, scheduler, false, None)
            .with_no_prefix_cache(true)
            .with_disable_eos_stop(!options.stop_at_eos);
        // `build` is async only to spawn the engine thread (which owns its own runtime).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .context("cannot start a tokio runtime")?;
        let runner = runtime.block_on(builder.build());
        Ok(Self { runner, vocab_size })
    }

    /// The engine's request sender, as a mistral.rs app holds it.
    pub fn sender(&self) -> Result<Sender<Request>> {
        self.runner
            .get_sender(None)
            .map_err(|e| anyhow!("mistral.rs engine is gone: {e}"))
    }

    /// Greedy completion of `prompt` token ids, `max_tokens` new tokens at most.
    /// With `token_ids`, the generated ids are returned too.
    pub fn complete(
        &self,
        prompt: &[u32],
        max_tokens: usize,
        token_ids: bool,
    ) -> Result<StockGeneration> {
        let ask = Greedy {
            max_tokens,
            rank: usize::from(token_ids),
            stop_ids: Vec::new(),
        };
        self.run_greedy(tokens_message(prompt)?, &ask)
    }

    /// Greedy completion of `text`, tokenized by mistral.rs itself.
    pub fn complete_text(
        &self,
        text: &str,
        max_tokens: usize,
        token_ids: bool,
    ) -> Result<StockGeneration> {
        if text.is_empty() {
            bail!("the prompt is empty");
        }
        let message = RequestMessage::Completion {
            text: text.to_string(),
            echo_prompt: false,
            best_of: None,
        };
        let ask = Greedy {
            max_tokens,
            rank: usize::from(token_ids),
            stop_ids: Vec::new(),
        };
        self.run_greedy(message, &ask)
    }

    /// The greedy next token after `prompt` (top-1 over the full vocabulary).
    pub fn next_token(&self, prompt: &[u32]) -> Result<u32> {
        let g = self.complete(prompt, 1, true)?;
        g.tokens
            .first()
            .copied()
            .ok_or_else(|| anyhow!("mistral.rs produced no token"))
    }

    /// Every token id ordered by its next-token logit after `prompt`, best first.
    pub fn ranked_next_tokens(&self, prompt: &[u32]) -> Result<Vec<u32>> {
        let ask = Greedy {
            max_tokens: 1,
            rank: self.vocab_size,
            stop_ids: Vec::new(),
        };
        Ok(self
            .run_greedy(tokens_message(prompt)?, &ask)?
            .first_ranking)
    }

    /// Greedy ids of at most `max_tokens` tokens, stopping before any of `stop_ids`.
    pub fn generate_ids(
        &self,
        prompt: &[u32],
        max_tokens: usize,
        stop_ids: &[u32],
    ) -> Result<Vec<u32>> {
        let ask = Greedy {
            max_tokens,
            rank: 1,
            stop_ids: stop_ids.to_vec(),
        };
        let mut tokens = self.run_greedy(tokens_message(prompt)?, &ask)?.tokens;
        if tokens.last().is_some_and(|t| stop_ids.contains(t)) {
            tokens.pop();
        }
        Ok(tokens)
    }

    fn run_greedy(&self, message: RequestMessage, ask: &Greedy) -> Result<StockGeneration> {
        if ask.max_tokens == 0 {
            bail!("max_tokens must be at least 1");
        }
        let (tx, mut rx) = channel(16);
        let mut sampling = SamplingParams::deterministic();
        sampling.temperature = None;
        sampling.max_len = Some(ask.max_tokens);
        // mistral.rs reports token ids only through logprobs; `rank` of them per step, in
        // logit order (it caps the count at the vocabulary size).
        sampling.top_n_logprobs = ask.rank;
        if !ask.stop_ids.is_empty() {
            sampling.stop_toks = Some(StopTokens::Ids(ask.stop_ids.clone()));
        }
        let mut request = NormalRequest::new_simple(
            message,
            sampling,
            tx,
            self.runner.next_request_id(),
            None,
            None,
        );
        request.return_logprobs = ask.rank > 0;
        request.constraint = Constraint::None;
        let start = Instant::now();
        self.sender()?
            .blocking_send(Request::Normal(Box::new(request)))
            .map_err(|_| anyhow!("mistral.rs engine stopped accepting requests"))?;
        let response = rx
            .blocking_recv()
            .ok_or_else(|| anyhow!("mistral.rs dropped the request without answering"))?;
        let seconds = start.elapsed().as_secs_f64();
        let done = completion_of(response)?;
        let choice = done
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("mistral.rs answered with no choice"))?;
        let steps = match (choice.logprobs, ask.rank > 0) {
            (Some(lp), true) => lp.content.unwrap_or_default(),
            (None, true) => bail!("mistral.rs answered without the logprobs asked for"),
            (_, false) => Vec::new(),
        };
        let tokens = steps
            .iter()
            .map(|step| {
                step.top_logprobs
                    .first()
                    .map(|t| t.token)
                    .ok_or_else(|| anyhow!("mistral.rs logprob without a top token"))
            })
            .collect::<Result<Vec<_>>>()?;
        let first_ranking = steps
            .first()
            .map(|step| step.top_logprobs.iter().map(|t| t.token).collect())
            .unwrap_or_default();
        Ok(StockGeneration {
            tokens,
            first_ranking,
            text: choice.text,
            completion_tokens: done.usage.completion_tokens,
            finish_reason: choice.finish_reason,
            seconds,
        })
    }
}

/// What one greedy request asks of mistral.rs.
struct Greedy {
    max_tokens: usize,
    /// Token ids to report per step, best first (0: none, 1: the chosen token).
    rank: usize,
    stop_ids: Vec<u32>,
}

fn tokens_message(prompt: &[u32]) -> Result<RequestMessage> {
    if prompt.is_empty() {
        bail!("the prompt is empty: give at least one token");
    }
    Ok(RequestMessage::CompletionTokens(prompt.to_vec()))
}

/// The completion in a final response, or the error it carries.
fn completion_of(response: Response) -> Result<CompletionResponse> {
    match response {
        Response::CompletionDone(done) => Ok(done),
        Response::CompletionModelError(msg, _) => bail!("mistral.rs model error: {msg}"),
        Response::ValidationError(e) => bail!("mistral.rs refused the request: {e}"),
        Response::InternalError(e) => bail!("mistral.rs internal error: {e}"),
        _ => bail!("mistral.rs answered a completion with an unexpected response kind"),
    }
}

impl crate::eval::bench::Contender for StockMistralRs {
    fn name(&self) -> &str {
        "mistral.rs"
    }

    fn generate(&self, prompt: &[u32], max_tokens: usize) -> Result<usize> {
        Ok(self.complete(prompt, max_tokens, false)?.completion_tokens)
    }
}

impl crate::eval::ab::ExternalEngine for StockMistralRs {
    fn answer(&mut self, prompt: &[u32], scoring: &crate::eval::ab::Scoring) -> Result<u32> {
        use crate::eval::ab::Scoring;
        match scoring {
            Scoring::FullVocab => self.next_token(prompt),
            Scoring::Labels(ids) => self
                .ranked_next_tokens(prompt)?
                .into_iter()
                .find(|t| ids.contains(t))
                .ok_or_else(|| anyhow!("mistral.rs ranked none of the label tokens {ids:?}")),
        }
    }

    fn generate(
        &mut self,
        prompt: &[u32],
        limits: &crate::eval::ab::GenerationLimits,
    ) -> Result<Vec<u32>> {
        self.generate_ids(prompt, limits.max_new_tokens, &limits.stop_tokens)
    }
}
