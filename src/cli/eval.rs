use super::{PluginArgs, TaskArgs};
use adainfer::eval::arms::build_arms;
use adainfer::eval::plots;
use adainfer::eval::run;
use adainfer::eval::sweep::{self, default_thresholds};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    plugin: PluginArgs,
    #[command(flatten)]
    task: TaskArgs,
    /// Model directory (overrides the config's `[model] path`; enough alone for dense and oracle).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Evaluate the first N rows of the split.
    #[arg(long)]
    limit: Option<usize>,
    /// Comma-separated: dense, oracle, adaptive (the config's policy) or any policy kind
    /// (shortgpt, unified_skip, gap_threshold, svm, …), or mistralrs (stock mistral.rs, dense;
    /// needs the mistralrs feature). Default: dense,adaptive,oracle with a config, dense,oracle
    /// without.
    #[arg(long)]
    arms: Option<String>,
    /// md or json.
    #[arg(long, default_value = "md")]
    format: String,
    /// test (default) or train.
    #[arg(long, default_value = "test")]
    split: String,
    /// Longest generated answer (SQuAD).
    #[arg(long, default_value_t = 16)]
    max_new_tokens: usize,
    /// Write SVG plots into this directory (adds the oracle arm for the per-layer pictures and,
    /// with a threshold policy, sweeps its threshold for the accuracy-vs-pruning curve).
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Thresholds of that sweep, comma-separated (default: a grid for the policy kind).
    #[arg(long)]
    sweep_thresholds: Option<String>,
    /// auto, f32, bf16 or f16 (without a config; a config's `[model]` says it otherwise).
    #[arg(long, default_value = "auto")]
    dtype: String,
    /// cpu, cuda, cuda:N or metal (without a config).
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

/// The engine from the config (with `--model` overriding its path) or from `--model` alone.
pub fn load_engine(
    config: Option<&adainfer::plugin::PluginConfig>,
    model: Option<&PathBuf>,
    dtype: &str,
    device: &str,
) -> Result<adainfer::Engine> {
    match (config, model) {
        (Some(c), m) => adainfer::plugin::load_engine(c, m.map(|p| p.as_path())),
        (None, Some(m)) => {
            let options = adainfer::LoadOptions::from_names(dtype, device)?;
            adainfer::Engine::load(m, &options)
                .with_context(|| format!("cannot load model {}", m.display()))
        }
        (None, None) => bail!("pass --config FILE or --model DIR"),
    }
}

/// Comma-separated numbers.
pub fn parse_list(list: &str) -> Result<Vec<f64>> {
    list.split(',')
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .with_context(|| format!("{v:?} is not a number"))
        })
        .collect()
}

fn write_plots(
    dir: &std::path::Path,
    engine: &adainfer::Engine,
    config: Option<&adainfer::plugin::PluginConfig>,
    prepared: &run::Prepared,
    report: &adainfer::eval::report::EvalReport,
    ab_run: &adainfer::eval::ab::AbRun,
    thresholds: Option<Vec<f64>>,
) -> Result<()> {
    let policy = config.map_or("", |c| c.policy.kind.as_str());
    let grid = match thresholds {
        Some(t) => Some(t),
        None => default_thresholds(policy).ok(),
    };
    let dense = ab_run
        .arm_names
        .iter()
        .position(|n| n == "dense")
        .map(|i| &ab_run.outcomes[i]);
    let points = match (config, grid, dense) {
        (Some(config), Some(grid), Some(dense)) => {
            let bar = progress(grid.len(), "threshold sweep");
            let points = sweep::sweep(engine, config, prepared, dense, &grid, |_| bar.inc(1))?;
            bar.finish_and_clear();
            points
        }
        _ => Vec::new(),
    };
    let input = plots::PlotInput {
        report,
        run: ab_run,
        sweep: &points,
        policy,
    };
    for path in plots::write_all(dir, &input)? {
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    if !matches!(a.format.as_str(), "json" | "md") {
        bail!("unknown --format {:?} (expected json or md)", a.format);
    }
    let config = a.plugin.load()?;
    let mut spec = a.task.spec(&a.split, a.limit, config.as_ref())?;
    spec.max_new_tokens = a.max_new_tokens;
    let engine = load_engine(config.as_ref(), a.model.as_ref(), &a.dtype, &a.device)?;
    let default_arms = if config.is_some() {
        "dense,adaptive,oracle"
    } else {
        "dense,oracle"
    };
    let mut arm_list = a.arms.as_deref().unwrap_or(default_arms).to_string();
    if a.plots.is_some() {
        // The per-layer pictures come from the oracle's lens; the curve needs dense answers.
        for needed in ["dense", "oracle"] {
            if !arm_list.split(',').any(|n| n.trim() == needed) {
                arm_list = format!("{arm_list},{needed}");
            }
        }
    }
    // Exit heads score the task's label tokens, so their features must read those tokens too.
    let config = match (config, run::scoring(&engine, &spec)?) {
        (Some(c), adainfer::eval::ab::Scoring::Labels(ids)) if c.features.exit_heads.is_some() => {
            Some(c.with_task_labels(&ids)?)
        }
        (c, _) => c,
    };
    let mut arms = build_arms(&arm_list, config.as_ref(), &engine)?;
    let prepared = run::prepare(&engine, &spec)?;
    let bar = progress(prepared.cases.len(), spec.task.name());
    let (report, run) = run::evaluate(&engine, &spec, &prepared, &mut arms, || bar.inc(1))?;
    bar.finish_and_clear();
    if let Some(dir) = &a.plots {
        let thresholds = a.sweep_thresholds.as_deref().map(parse_list).transpose()?;
        write_plots(
            dir,
            &engine,
            config.as_ref(),
            &prepared,
            &report,
            &run,
            thresholds,
        )?;
    }
    if a.format == "json" {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.to_markdown());
    }
    Ok(())
}
