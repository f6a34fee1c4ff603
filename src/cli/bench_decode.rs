use super::generate::policy;
use super::{ConfigModelArgs, GenerationFlags, PluginArgs};
use adainfer::engine::modes::Mode;
use adainfer::engine::synthetic::SyntheticSpec;
use adainfer::engine::{GenerationParams, SamplingParams};
use adainfer::eval::bench_decode::{bench_decode, markdown_table, parse_modes};
use adainfer::eval::tasks::{self, Split, Task};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face model directory; with --config it overrides the config's model path.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Benchmark a random-weight model of this shape instead: smollm2-135m (30 × 576), written
    /// to a temporary directory with the tokenizer of `--tokenizer`.
    #[arg(long, conflicts_with = "model")]
    synthetic: Option<String>,
    #[arg(long, default_value = "models/tiny-llama-sst2-agnews/tokenizer.json")]
    tokenizer: PathBuf,
    /// auto, f32, bf16 or f16 (default: the config's, else auto).
    #[arg(long)]
    dtype: Option<String>,
    /// cpu, cuda, cuda:N or metal (default: the config's, else cpu).
    #[arg(long)]
    device: Option<String>,
    /// The plugin's policy decides exits and draft depth unless --draft-layer is given.
    #[command(flatten)]
    plugin: PluginArgs,
    /// Prompts `Q: {x}\nA:` from this task's test split (sst2, agnews, …).
    #[arg(long, default_value = "sst2")]
    task: String,
    /// How many prompts (the split's first rows).
    #[arg(long, default_value_t = 20)]
    prompts: usize,
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// Comma-separated: dense, early_exit[/FILL], self_speculative[/k=N][/c=X]; `all` = dense,
    /// early exit with each KV fill, and self-speculative.
    #[arg(long, default_value = "all")]
    modes: String,
    #[command(flatten)]
    flags: GenerationFlags,
    /// markdown or json.
    #[arg(long, default_value = "markdown")]
    format: String,
}

/// A random-weight model directory that removes itself.
struct TempModel(PathBuf);

impl Drop for TempModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(a: Args) -> Result<()> {
    if !matches!(a.format.as_str(), "markdown" | "json") {
        bail!("--format must be markdown or json, got {:?}", a.format);
    }
    let config = a.plugin.load()?;
    let temp = match a.synthetic.as_deref() {
        None => None,
        Some("smollm2-135m") => {
            let dir =
                std::env::temp_dir().join(format!("adainfer-smollm2-shape-{}", std::process::id()));
            let temp = TempModel(dir);
            SyntheticSpec::smollm2_135m_shape()
                .write_dir(&temp.0, &a.tokenizer, 1)
                .context("cannot write the random-weight model")?;
            Some(temp)
        }
        Some(other) => bail!("unknown --synthetic shape {other:?}: expected smollm2-135m"),
    };
    let model = temp.as_ref().map(|t| t.0.clone()).or(a.model.clone());
    if model.is_none() && config.is_none() {
        bail!("give --model, --synthetic or --config");
    }
    let engine = ConfigModelArgs {
        model,
        dtype: a.dtype.clone(),
        device: a.device.clone(),
    }
    .load(config.as_ref())?;
    let mut base = a.flags.apply(config.as_ref().map(|c| &c.generation));
    base.mode = Mode::EarlyExit;
    let mut policy = policy(&base, config.as_ref(), &engine)?;
    let policy_name = match (base.fixed_layer, &config) {
        (Some(layer), _) => format!("fixed exit/draft layer {layer}"),
        (None, Some(c)) => format!("plugin policy {}", c.policy.kind),
        (None, None) => bail!("give --draft-layer or a plugin --config to decide exits"),
    };
    let hook = policy.hook().context("no exit policy")?;
    let task = Task::parse(&a.task)?;
    let prompts = tasks::load_examples(task, Split::Test, Some(a.prompts))?
        .iter()
        .map(|e| engine.encode(&tasks::prompt(e)))
        .collect::<Result<Vec<_>>>()?;
    let modes = parse_modes(&a.modes, base.kv_fill, base.draft)?;
    let params = GenerationParams {
        max_tokens: a.max_tokens,
        sampling: SamplingParams::greedy(),
        // Random weights have no real end of text: let every mode run to max_tokens.
        stop_tokens: if temp.is_some() {
            Vec::new()
        } else {
            engine.eos_token_ids.clone()
        },
    };
    let reports = bench_decode(&engine.model, &prompts, &params, &modes, hook)?;
    if a.format == "json" {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        let name = match &a.synthetic {
            Some(shape) => format!("random-weight {shape} shape"),
            None => engine.source.path().display().to_string(),
        };
        println!(
            "{name} ({} blocks, {}): {} {task} prompts, greedy, up to {} tokens, {policy_name}\n",
            engine.model.num_layers(),
            a.dtype.as_deref().unwrap_or("config/auto"),
            prompts.len(),
            a.max_tokens,
        );
        print!("{}", markdown_table(&reports));
    }
    Ok(())
}
