use super::eval::{parse_list, progress};
use super::{PluginArgs, TaskArgs};
use adainfer::eval::ab::{self, Arm};
use adainfer::eval::guarantee::{fixed_sequence, min_prompts};
use adainfer::eval::run;
use adainfer::eval::sweep::{self, default_thresholds, safest_first, with_threshold};
use adainfer::plugin::classifier::write_atomically;
use adainfer::plugin::config::CalibrationRecord;
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
    /// ε: the largest share of new prompts whose answer may differ from dense (0.01 = 1%).
    #[arg(long, alias = "max-drop", default_value_t = 0.01)]
    budget: f64,
    /// 1 − δ: the probability, over the draw of calibration prompts, that the chosen rule
    /// keeps the budget on new prompts of the task.
    #[arg(long, default_value_t = 0.9)]
    confidence: f64,
    /// Held-out split to calibrate on: train (its rows that are not demonstrations) or test.
    #[arg(long, default_value = "train")]
    split: String,
    /// Prompts to calibrate on (ε = 1 %, δ = 0.1 needs at least 230).
    #[arg(long, default_value_t = 300)]
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
    let (epsilon, delta) = (a.budget, 1.0 - a.confidence);
    if !(epsilon > 0.0 && epsilon < 1.0) {
        bail!("--budget must be within (0, 1), got {epsilon}");
    }
    if !(delta > 0.0 && delta < 1.0) {
        bail!("--confidence must be within (0, 1), got {}", a.confidence);
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
    let needed = min_prompts(epsilon, delta);
    if n < needed {
        bail!(
            "{n} calibration prompts cannot certify any rule: with ε = {epsilon} and δ = {delta} even \
             a rule that never disagrees with dense needs {needed} prompts ((1 − ε)^n ≤ δ); raise --limit, \
             or loosen --budget / --confidence"
        );
    }
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
    let ordered = safest_first(&points);
    let trials: Vec<_> = ordered.iter().map(|p| p.trial()).collect();
    let certified = fixed_sequence(&trials, epsilon, delta);
    println!(
        "{kind} on {} {:?} rows ({n} prompts, {}-shot): certify ≤ {:.1}% disagreement with dense \
         with probability ≥ {:.0}% (Learn-then-Test, fixed sequence from the highest threshold)\n",
        spec.task,
        spec.split,
        spec.shots,
        100.0 * epsilon,
        100.0 * a.confidence,
    );
    println!("| threshold | accuracy | avg layers | pruning ratio | FLOPs ratio | disagreements | p-value (risk > ε) | |");
    println!("|---|---|---|---|---|---|---|---|");
    for (i, (p, pv)) in ordered.iter().zip(&certified.p_values).enumerate() {
        let verdict = match certified.chosen {
            Some(c) if i < c => "passed",
            Some(c) if i == c => "**chosen**",
            Some(c) if i == c + 1 => "failed: the walk stops",
            None if i == 0 => "failed: the walk stops",
            _ => "not tested",
        };
        println!(
            "| {} | {:.1}% | {:.2} | {:.1}% | {:.3} | {}/{} | {:.3} | {verdict} |",
            p.threshold,
            100.0 * p.accuracy,
            p.avg_layers,
            100.0 * p.pruning_ratio,
            p.flops_ratio,
            p.disagreements,
            p.prompts,
            pv,
        );
    }
    let Some(chosen) = certified.chosen else {
        bail!(
            "no threshold could be certified: the safest one tried ({}) disagreed with dense on {} of {n} \
             prompts (p-value {:.3} > δ = {delta}); the budget is not relaxed — try higher thresholds, \
             more prompts, or a larger --budget",
            ordered[0].threshold,
            ordered[0].disagreements,
            certified.p_values[0],
        );
    };
    let best = ordered[chosen];
    let mut tuned = with_threshold(&config, best.threshold)?;
    if let Some(model) = &a.model {
        tuned.model.path = model.clone();
    }
    absolute_paths(&mut tuned);
    tuned.calibration = Some(CalibrationRecord {
        model: engine.identity.clone(),
        task: spec.task.name().to_string(),
        split: format!("{:?}", spec.split).to_lowercase(),
        shots: spec.shots,
        prompt_format: spec.prompt_format.name().to_string(),
        label_scoring: spec.label_scoring,
        features: config.features.names.clone(),
        label_tokens: config.features.label_tokens.clone(),
        policy: kind.clone(),
        epsilon,
        delta,
        prompts: n,
        disagreements: best.disagreements,
        p_value: certified.p_values[chosen],
    });
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| default_out(&config.source, spec.task.name()));
    let header = format!(
        "# Written by `adainfer calibrate` from {}: {kind} threshold {} is the most aggressive\n\
         # setting tried that Learn-then-Test certifies: on new {} prompts like the {n} {:?} ones it\n\
         # was calibrated on, at most {:.1}% of answers differ from dense, with probability ≥ {:.0}%.\n\
         # There it disagreed on {} of {n} and ran {:.2} of {} layers on average.\n\n",
        config.source.display(),
        best.threshold,
        spec.task,
        spec.split,
        100.0 * epsilon,
        100.0 * a.confidence,
        best.disagreements,
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
        "\nchosen: threshold {} (disagreement {}/{n}, p-value {:.3}; avg layers {:.2}, pruning {:.1}%); wrote {}",
        best.threshold,
        best.disagreements,
        certified.p_values[chosen],
        best.avg_layers,
        100.0 * best.pruning_ratio,
        out.display()
    );
    Ok(())
}
