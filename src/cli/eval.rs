use adainfer::eval::ab::Arm;
use adainfer::eval::run::{self, EvalSpec};
use adainfer::eval::tasks::{Split, Task};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Plugin config (TOML): the model and the adaptive arm's policy.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Model directory (overrides the config's `[model] path`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// sst2, agnews, mmlu, csqa or squad.
    #[arg(long)]
    task: String,
    /// In-context demonstrations per prompt.
    #[arg(long, default_value_t = 0)]
    shots: usize,
    /// Evaluate the first N rows of the split.
    #[arg(long)]
    limit: Option<usize>,
    /// Comma-separated: dense, oracle (and, with the plugin, adaptive, shortgpt, unified_skip).
    #[arg(long, default_value = "dense,oracle")]
    arms: String,
    /// md or json.
    #[arg(long, default_value = "md")]
    format: String,
    /// Score among the task's label tokens instead of the full vocabulary.
    #[arg(long)]
    label_scoring: bool,
    /// Seed of the demonstration draw.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// test (default) or train.
    #[arg(long, default_value = "test")]
    split: String,
    /// Longest generated answer (SQuAD).
    #[arg(long, default_value_t = 16)]
    max_new_tokens: usize,
    /// Dataset directory (default ../shared/data or $ADAINFER_DATA).
    #[arg(long)]
    data: Option<PathBuf>,
    /// f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// A progress bar on stderr (drawn only when stderr is a terminal).
pub fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} prompts, {elapsed} (eta {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

pub fn spec_of(
    task: &str,
    split: &str,
    shots: usize,
    limit: Option<usize>,
    seed: u64,
    data: Option<&PathBuf>,
) -> Result<EvalSpec> {
    let mut spec = EvalSpec::new(Task::parse(task)?);
    spec.split = Split::parse(split)?;
    spec.shots = shots;
    spec.limit = limit;
    spec.seed = seed;
    if let Some(dir) = data {
        spec.data_dir = dir.clone();
    }
    Ok(spec)
}

fn build_arms(names: &str) -> Result<Vec<Arm>> {
    let mut arms = Vec::new();
    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if arms.iter().any(|a: &Arm| a.name == name) {
            bail!("arm {name:?} is listed twice in --arms");
        }
        arms.push(match name {
            "dense" => Arm::dense(),
            "oracle" => Arm::oracle(),
            "adaptive" | "shortgpt" | "unified_skip" => {
                bail!("arm {name:?} needs the AdaInfer plugin configs (not available in this build yet)")
            }
            other => bail!(
                "unknown arm {other:?} in --arms (expected dense, adaptive, shortgpt, unified_skip, oracle)"
            ),
        });
    }
    if arms.is_empty() {
        bail!("--arms names no arm");
    }
    Ok(arms)
}

pub fn run(a: Args) -> Result<()> {
    if !matches!(a.format.as_str(), "json" | "md") {
        bail!("unknown --format {:?} (expected json or md)", a.format);
    }
    let model = match (&a.model, &a.config) {
        (Some(m), _) => m.clone(),
        (None, Some(_)) => {
            bail!("plugin configs are not supported in this build yet; pass --model DIR")
        }
        (None, None) => bail!("pass --model DIR or --config FILE"),
    };
    let mut spec = spec_of(&a.task, &a.split, a.shots, a.limit, a.seed, a.data.as_ref())?;
    spec.label_scoring = a.label_scoring;
    spec.max_new_tokens = a.max_new_tokens;
    let options = adainfer::LoadOptions::from_names(&a.dtype, &a.device)?;
    let engine = adainfer::Engine::load(&model, &options)
        .with_context(|| format!("cannot load model {}", model.display()))?;
    let mut arms = build_arms(&a.arms)?;
    let prepared = run::prepare(&engine, &spec)?;
    let bar = progress(prepared.cases.len(), spec.task.name());
    let (report, _run) = run::evaluate(&engine, &spec, &prepared, &mut arms, || bar.inc(1))?;
    bar.finish_and_clear();
    if a.format == "json" {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.to_markdown());
    }
    Ok(())
}
