//! The `adainfer` command line: a thin layer over the library, one file per subcommand.

mod bench;
mod bench_decode;
mod calibrate;
mod chat;
mod collect;
mod eval;
mod generate;
mod inspect;
mod serve;
mod skip_search;
mod train;
mod train_heads;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "adainfer",
    version,
    about = "Adaptive-depth (early-exit) LLM inference"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt.
    Generate(generate::Args),
    /// Chat with a model in the terminal, with its own chat template (Ctrl-D ends).
    Chat(chat::Args),
    /// Show the logit lens of the last prompt token at every layer.
    Inspect(inspect::Args),
    /// Time dense prefill and decode (and stock mistral.rs with the `mistralrs` feature).
    Bench(bench::Args),
    /// Run task prompts densely and write one training row per (prompt, layer).
    Collect(collect::Args),
    /// Fit an exit classifier (svm, logistic or crf) on collected rows.
    Train(train::Args),
    /// Fit learned exit heads: per block, a linear read-out of the label answer from the hidden
    /// state (for label-scored tasks where the logit lens settles late).
    TrainHeads(train_heads::Args),
    /// Dense vs adaptive (and oracle) on a benchmark task: accuracy, layers, FLOPs, wall-clock.
    Eval(eval::Args),
    /// Sweep the policy threshold on held-out prompts; write the most aggressive config within a budget.
    Calibrate(calibrate::Args),
    /// Serve the engine over an OpenAI-compatible HTTP API.
    Serve(serve::Args),
    /// Decode tokens/s of dense, early exit (each KV fill) and self-speculative generation.
    BenchDecode(bench_decode::Args),
    /// Search the blocks a skip-layer draft should leave out, for predicted decode speed on
    /// calibration prompts (then measure it with bench-decode).
    SearchSkipDraft(skip_search::Args),
}

/// Where the model comes from and how it is loaded; shared by every subcommand.
#[derive(clap::Args, Clone)]
pub struct ModelArgs {
    /// A Hugging Face model directory (config.json, *.safetensors, tokenizer.json) or a
    /// `.gguf` file.
    #[arg(long)]
    pub model: PathBuf,
    /// auto (f32 for safetensors, the file's own types for GGUF), f32, bf16 or f16.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl ModelArgs {
    pub fn load(&self) -> Result<adainfer::Engine> {
        let options = adainfer::LoadOptions::from_names(&self.dtype, &self.device)?;
        adainfer::Engine::load(&self.model, &options)
    }
}

/// An AdaInfer plugin config and its command-line overrides; shared by every subcommand that
/// can run the plugin.
#[derive(clap::Args, Clone, Default)]
pub struct PluginArgs {
    /// AdaInfer plugin config (TOML, see plugin-configs/).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a config value, e.g. `--set policy.threshold=0.6` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
}

/// Flags that override a plugin config's `[generation]` table; shared by `generate` and
/// `bench-decode`.
#[derive(clap::Args)]
pub struct GenerationFlags {
    /// How early exit fills the K/V an exit leaves out: propagate (approximate), recompute
    /// (exact cache) or dense_after_prefill (exit in the prompt pass only). Default: the
    /// config's, else recompute.
    #[arg(long)]
    pub kv_fill: Option<adainfer::engine::kv_fill::KvFill>,
    /// Exit (early_exit) or draft (self_speculative) after this block, counted from 1, instead
    /// of asking the plugin's policy.
    #[arg(long)]
    pub draft_layer: Option<usize>,
    /// Drafts per self-speculative round, at most. Default: the config's, else 4.
    #[arg(long)]
    pub draft_tokens: Option<usize>,
    /// End a round's drafting after a draft whose top probability is below this. Default: the
    /// config's, else 0 (off).
    #[arg(long)]
    pub draft_confidence: Option<f32>,
    /// Layer drafts: adapt the confidence bar (starting at --draft-confidence) to keep this
    /// request's running acceptance near this target. Default: the config's, else 0 (off).
    #[arg(long)]
    pub draft_target_acceptance: Option<f32>,
    /// Layer drafts: score only the vocabulary's first N tokens at the draft's exit (FR-Spec);
    /// verification keeps the full head. Default: the config's, else 0 (the full head).
    #[arg(long)]
    pub draft_vocab: Option<usize>,
    /// What drafts in self_speculative mode: layers (the model's shallow passes, depth from the
    /// policy), prompt_lookup (tokens that followed the last n-gram in the context), auto
    /// (prompt lookup, drafting only as much as this request's measurements say pays) or
    /// skip_layers (the model with --draft-skip's blocks left out).
    /// Default: the config's, else layers.
    #[arg(long)]
    pub draft_source: Option<adainfer::engine::speculative::DraftSource>,
    /// Prompt lookup: the longest n-gram matched. Default: the config's, else 3.
    #[arg(long)]
    pub draft_ngram: Option<usize>,
    /// skip_layers drafts: the blocks a draft leaves out, counted from 1 (`10,15,20`).
    /// Default: the config's ([generation.draft] skip).
    #[arg(long)]
    pub draft_skip: Option<adainfer::engine::block_set::BlockSet>,
}

impl GenerationFlags {
    /// `config` (a plugin config's `[generation]` table, or the defaults) with the flags on top.
    pub fn apply(
        &self,
        config: Option<&adainfer::engine::modes::ModeSpec>,
    ) -> adainfer::engine::modes::ModeSpec {
        let mut spec = config.copied().unwrap_or_default();
        spec.kv_fill = self.kv_fill.unwrap_or(spec.kv_fill);
        spec.fixed_layer = self.draft_layer.or(spec.fixed_layer);
        spec.draft.tokens = self.draft_tokens.unwrap_or(spec.draft.tokens);
        spec.draft.min_confidence = self.draft_confidence.unwrap_or(spec.draft.min_confidence);
        spec.draft.target_acceptance = self
            .draft_target_acceptance
            .unwrap_or(spec.draft.target_acceptance);
        spec.draft.vocab = self.draft_vocab.unwrap_or(spec.draft.vocab);
        spec.draft.source = self.draft_source.unwrap_or(spec.draft.source);
        spec.draft.ngram = self.draft_ngram.unwrap_or(spec.draft.ngram);
        spec.draft.skip = self.draft_skip.unwrap_or(spec.draft.skip);
        spec
    }

    /// [`Self::apply`], and `mode` if given.
    pub fn apply_with_mode(
        &self,
        mode: Option<adainfer::engine::modes::Mode>,
        config: Option<&adainfer::engine::modes::ModeSpec>,
    ) -> adainfer::engine::modes::ModeSpec {
        let mut spec = self.apply(config);
        spec.mode = mode.unwrap_or(spec.mode);
        spec
    }
}

/// How tokens are drawn; shared by `generate` and `chat`.
#[derive(clap::Args)]
pub struct SamplingFlags {
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SamplingFlags {
    pub fn params(&self) -> adainfer::engine::SamplingParams {
        adainfer::engine::SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
            rules: Default::default(),
        }
    }
}

/// One split of a task's prompts run densely to learn from (`collect`, `train-heads`).
#[derive(clap::Args)]
pub struct TrainingPromptArgs {
    #[command(flatten)]
    pub plugin: PluginArgs,
    /// Overrides the config's model path.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The task and its prompts, as `eval` builds them (shots, format, label scoring).
    #[command(flatten)]
    pub task: TaskArgs,
    /// train or test.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// The first N examples of the split that are not demonstrations (default: all).
    #[arg(long)]
    pub limit: Option<usize>,
}

impl TrainingPromptArgs {
    /// The config (required: `command` names who needs it) and the prompts' spec.
    pub fn load(
        &self,
        command: &str,
    ) -> Result<(
        adainfer::plugin::PluginConfig,
        adainfer::eval::run::EvalSpec,
    )> {
        let config = self
            .plugin
            .load()?
            .with_context(|| format!("{command} needs --config FILE"))?;
        let spec = self.task.spec(&self.split, self.limit, Some(&config))?;
        Ok((config, spec))
    }
}

/// Which task and how its prompts are built; shared by `eval` and `calibrate`.
#[derive(clap::Args)]
pub struct TaskArgs {
    /// sst2, agnews, mmlu, csqa or squad.
    #[arg(long)]
    pub task: String,
    /// In-context demonstrations per prompt (default: a calibrated config's, else 0).
    #[arg(long)]
    pub shots: Option<usize>,
    /// Seed of the demonstration draw (default: a calibrated config's, else 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Score among the task's label tokens instead of the full vocabulary.
    #[arg(long)]
    pub label_scoring: bool,
    /// qa (the paper's `Q: {x}\nA:`) or chat (the model's chat template: an instruction, the
    /// demonstrations as earlier turns, then the query). Default: a calibrated config's, else qa.
    #[arg(long)]
    pub prompt_format: Option<String>,
    /// Dataset directory (default ../shared/data or $ADAINFER_DATA).
    #[arg(long)]
    pub data: Option<PathBuf>,
}

impl TaskArgs {
    /// The evaluation of `split`'s first `limit` rows (all without a limit). Prompt settings not
    /// given default to those a calibrated config was certified with; settings that differ from
    /// them are pointed out, since the guarantee then does not cover the run.
    pub fn spec(
        &self,
        split: &str,
        limit: Option<usize>,
        config: Option<&adainfer::plugin::PluginConfig>,
    ) -> Result<adainfer::eval::run::EvalSpec> {
        use adainfer::eval::prompts::PromptFormat;
        let task = adainfer::eval::tasks::Task::parse(&self.task)?;
        let record = config
            .and_then(|c| c.calibration.as_ref())
            .filter(|r| r.task == task.name());
        let mut spec = adainfer::eval::run::EvalSpec::new(task);
        spec.split = adainfer::eval::tasks::Split::parse(split)?;
        spec.shots = self.shots.or(record.map(|r| r.shots)).unwrap_or(0);
        spec.limit = limit;
        spec.seed = self.seed.or(record.map(|r| r.seed)).unwrap_or(0);
        spec.label_scoring = self.label_scoring || record.is_some_and(|r| r.label_scoring);
        spec.prompt_format = match (&self.prompt_format, record) {
            (Some(name), _) => PromptFormat::parse(name)?,
            (None, Some(r)) => PromptFormat::parse(&r.prompt_format)?,
            (None, None) => PromptFormat::Qa,
        };
        if let Some(r) = record {
            let certified = (r.shots, r.seed, r.prompt_format.as_str(), r.label_scoring);
            let this = (
                spec.shots,
                spec.seed,
                spec.prompt_format.name(),
                spec.label_scoring,
            );
            if certified != this {
                eprintln!(
                    "note: this config was certified on {}-shot (seed {}) {} prompts, label scoring {}; \
                     this run uses {}-shot (seed {}) {} prompts, label scoring {}: its guarantee does not cover them",
                    r.shots, r.seed, r.prompt_format, r.label_scoring,
                    spec.shots, spec.seed, spec.prompt_format.name(), spec.label_scoring
                );
            }
        }
        if let Some(dir) = &self.data {
            spec.data_dir = dir.clone();
        }
        Ok(spec)
    }
}

/// `--model` / `--dtype` / `--device` where a plugin config may give them instead.
#[derive(clap::Args, Clone)]
pub struct ConfigModelArgs {
    /// Hugging Face model directory or `.gguf` file; with --config it overrides the config's
    /// model path.
    #[arg(long, required_unless_present = "config")]
    pub model: Option<PathBuf>,
    /// auto, f32, bf16 or f16 (default: the config's, else auto).
    #[arg(long)]
    pub dtype: Option<String>,
    /// cpu, cuda, cuda:N or metal (default: the config's, else cpu).
    #[arg(long)]
    pub device: Option<String>,
}

impl ConfigModelArgs {
    pub fn load(
        &self,
        config: Option<&adainfer::plugin::PluginConfig>,
    ) -> Result<adainfer::Engine> {
        match config {
            Some(c) => {
                let mut c = c.clone();
                c.model.dtype = self.dtype.clone().unwrap_or(c.model.dtype);
                c.model.device = self.device.clone().unwrap_or(c.model.device);
                adainfer::plugin::load_engine(&c, self.model.as_deref())
            }
            None => ModelArgs {
                model: self
                    .model
                    .clone()
                    .context("--model or --config is required")?,
                dtype: self.dtype.clone().unwrap_or_else(|| "auto".into()),
                device: self.device.clone().unwrap_or_else(|| "cpu".into()),
            }
            .load(),
        }
    }
}

impl PluginArgs {
    pub fn load(&self) -> Result<Option<adainfer::plugin::PluginConfig>> {
        match &self.config {
            Some(path) => Ok(Some(adainfer::plugin::PluginConfig::load(path, &self.set)?)),
            None if !self.set.is_empty() => anyhow::bail!("--set needs --config"),
            None => Ok(None),
        }
    }
}

pub fn run(cli: Cli) -> Result<()> {
    // The server's engine worker enters the engine pool itself; every other command runs there
    // whole (see `engine::threads`).
    let command = match cli.command {
        Command::Serve(a) => return serve::run(a),
        other => other,
    };
    adainfer::engine::threads::in_pool(|| match command {
        Command::Generate(a) => generate::run(a),
        Command::Chat(a) => chat::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Collect(a) => collect::run(a),
        Command::Train(a) => train::run(a),
        Command::TrainHeads(a) => train_heads::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Calibrate(a) => calibrate::run(a),
        Command::Serve(_) => unreachable!("served above"),
        Command::BenchDecode(a) => bench_decode::run(a),
        Command::SearchSkipDraft(a) => skip_search::run(a),
    })
}
