use super::eval::{parse_list, progress};
use super::{PluginArgs, TaskArgs};
use adainfer::eval::ab::{self, Arm};
use adainfer::eval::run;
use adainfer::eval::sweep::{self, default_thresholds, most_aggressive, with_threshold};
use adainfer::plugin::classifier::write_atomically;
use adainfer::plugin::{load_engine, PluginConfig};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    plugin: PluginArgs,
    #[command(flatten)]
    task: TaskArgs,
    /// Model directory (overrides the config's `[model] path`, and is written to the output).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Largest allowed share of prompts whose answer differs from dense (0.01 = 1%).
    #[arg(long, default_value_t = 0.01)]
    max_drop: f64,
    /// Held-out split to calibrate on: train (its rows that are not demonstrations) or test.
    #[arg(long, default_value = "train")]
    split: String,
    /// Prompts to calibrate on.
    #[arg(long, default_value_t = 200)]
    limit: usize,
    /// Comma-separated thresholds to try (default: a grid for the policy kind).
    #[arg(long)]
    thresholds: Option<String>,
    /// Where to write the calibrated config (default: beside the config, `<name>.calibrated-<task>.toml`).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn default_out(config: &Path, task: &str) -> PathBuf {
    let stem = config
        .file_stem()
        .map_or("config".into(), |s| s.to_string_lossy());
    config.with_file_name(format!("{stem}.calibrated-{task}.toml"))
}

/// The written config may live anywhere, so its paths must not depend on where it was read.
fn absolute_paths(config: &mut PluginConfig) {
    let absolute = |p: &mut PathBuf| {
        if let Ok(abs) = std::fs::canonicalize(&*p) {
            *p = abs;
        }
    };
    absolute(&mut config.model.path);
    for params in [&mut config.policy.svm, &mut config.policy.logistic]
        .into_iter()
        .flatten()
    {
        absolute(&mut params.classifier);
    }
}

/// f32 settings print as `0.8999999761581421` once widened; 7 significant digits give `0.9` back.
fn tidy_floats(value: &mut toml::Value) {
    match value {
        toml::Value::Float(x) => {
            if let Ok(short) = format!("{:.6e}", *x).parse::<f64>() {
                *x = short;
            }
        }
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| tidy_floats(v)),
        toml::Value::Array(a) => a.iter_mut().for_each(tidy_floats),
        _ => {}
    }
}

pub fn run(a: Args) -> Result<()> {
    let config = a.plugin.load()?.context("calibrate needs --config FILE")?;
    if !(0.0..=1.0).contains(&a.max_drop) {
        bail!("--max-drop must be within [0, 1], got {}", a.max_drop);
    }
    let kind = config.policy.kind.clone();
    let thresholds = match &a.thresholds {
        Some(list) => parse_list(list).context("--thresholds")?,
        None => default_thresholds(&kind)?,
    };
    with_threshold(&config, 0.5)?; // fail early on a static policy, before loading anything
    let spec = a.task.spec(&a.split, Some(a.limit))?;
    let engine = load_engine(&config, a.model.as_deref())?;
    let prepared = run::prepare(&engine, &spec)?;
    let n = prepared.cases.len();
    let bar = progress(n, "dense");
    let dense = ab::run_arms(
        &engine,
        &mut [Arm::dense()],
        &prepared.cases,
        &prepared.scoring,
        prepared.generation.as_ref(),
        || bar.inc(1),
    )?;
    bar.finish_and_clear();
    let dense = dense.outcomes.into_iter().next().unwrap_or_default();
    let bar = progress(thresholds.len(), "thresholds");
    let points = sweep::sweep(&engine, &config, &prepared, &dense, &thresholds, |_| {
        bar.inc(1)
    })?;
    bar.finish_and_clear();
    println!(
        "{kind} on {} {:?} rows ({n} prompts, {}-shot), budget: ≤ {:.1}% disagreement with dense\n",
        spec.task,
        spec.split,
        spec.shots,
        100.0 * a.max_drop
    );
    println!("| threshold | accuracy | avg layers | pruning ratio | FLOPs ratio | agreement with dense |");
    println!("|---|---|---|---|---|---|");
    for p in &points {
        println!(
            "| {} | {:.1}% | {:.2} | {:.1}% | {:.3} | {:.1}% |",
            p.threshold,
            100.0 * p.accuracy,
            p.avg_layers,
            100.0 * p.pruning_ratio,
            p.flops_ratio,
            100.0 * p.agreement_with_dense
        );
    }
    let Some(best) = most_aggressive(&points, a.max_drop) else {
        bail!(
            "no threshold kept disagreement with dense within {:.1}%; try higher thresholds or a larger --max-drop",
            100.0 * a.max_drop
        );
    };
    let mut tuned = with_threshold(&config, best.threshold)?;
    if let Some(model) = &a.model {
        tuned.model.path = model.clone();
    }
    absolute_paths(&mut tuned);
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| default_out(&config.source, spec.task.name()));
    let header = format!(
        "# Written by `adainfer calibrate` from {}: {kind} threshold {} is the most aggressive\n\
         # setting tried whose answers agree with dense on {:.1}% of {n} {} {:?} prompts\n\
         # (budget {:.1}% disagreement); it ran {:.2} of {} layers on average there.\n\n",
        config.source.display(),
        best.threshold,
        100.0 * best.agreement_with_dense,
        spec.task,
        spec.split,
        100.0 * a.max_drop,
        best.avg_layers,
        engine.model.num_layers(),
    );
    let mut doc = toml::Value::try_from(&tuned)?;
    tidy_floats(&mut doc);
    let text = format!("{header}{}", toml::to_string_pretty(&doc)?);
    // What we write must load back as the same policy.
    PluginConfig::parse(&text, &out, &[]).context("the calibrated config does not load back")?;
    write_atomically(&out, text.as_bytes())?;
    println!(
        "\nchosen: threshold {} (agreement {:.1}%, avg layers {:.2}, pruning {:.1}%); wrote {}",
        best.threshold,
        100.0 * best.agreement_with_dense,
        best.avg_layers,
        100.0 * best.pruning_ratio,
        out.display()
    );
    Ok(())
}
