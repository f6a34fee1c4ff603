mod budgets;

use super::eval::parse_list;
use super::{PluginArgs, TaskArgs};
use adainfer::eval::ab::Scoring;
use adainfer::eval::budget_sweep::{self, cheapest_passed, walk_budgets, Measured};
use adainfer::eval::guarantee::{fixed_sequence, min_prompts, selection_order, Trial};
use adainfer::eval::per_layer;
use adainfer::eval::replay::{self, Replayed};
use adainfer::eval::run;
use adainfer::eval::sweep::{default_thresholds, with_threshold};
use adainfer::eval::tasks::Split;
use adainfer::plugin::classifier::{write_atomically, Classifier, TrainingPrompts};
use adainfer::plugin::config::CalibrationRecord;
use adainfer::plugin::exit_heads::ExitHeads;
use adainfer::plugin::policy::Signal;
use adainfer::plugin::{load_engine, PluginConfig};
use anyhow::{bail, Context, Result};
use budgets::{check_prompts, report_budgets, traces_for, Walked};
use std::collections::BTreeSet;
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
    /// Skip this many of the split's prompts first (after the left-out ones): a second
    /// calibration on prompts the first one never saw.
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// Comma-separated thresholds to try (default: a grid for the policy kind).
    #[arg(long)]
    thresholds: Option<String>,
    /// Comma-separated minimum exit layers to try with every threshold (default: the config's
    /// `[limits] min_layer` only). More than one makes the rule two-parameter: the test order is
    /// fixed on half of the prompts and the rules are tested on the other half.
    #[arg(long)]
    min_layers: Option<String>,
    /// Comma-separated risk levels r: each adds a rule with one threshold per block, fitted on the
    /// selection half (block l may exit where the prompts above its threshold disagreed with dense
    /// on at most r of them); gap_threshold and top_prob_threshold only.
    #[arg(long)]
    per_layer_risks: Option<String>,
    /// Seed of the selection / test split (many-parameter rules).
    #[arg(long, default_value_t = 0)]
    split_seed: u64,
    /// Where to write the calibrated config (default: beside the config, `<name>.calibrated-<task>.toml`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep the dense passes in FILE: a run that finds no FILE records and writes them; later runs
    /// on the same prompts (any policy, feature subset, thresholds or budget) read them instead
    /// of running the model. Record with every feature a later run may ask for.
    #[arg(long)]
    traces: Option<PathBuf>,
    /// Comma-separated budgets ε: walk the same test sequence again at each and report the rule
    /// each certifies (the accuracy–pruning curve as the budget sweeps). Each ε's guarantee holds
    /// on its own, not jointly with the others.
    #[arg(long)]
    sweep_budgets: Option<String>,
    /// Replay the chosen rules on the first N prompts of the test split, which calibration never
    /// sees (needs --split train), beside dense and the oracle there.
    #[arg(long)]
    check_limit: Option<usize>,
    /// Keep the check prompts' dense passes in FILE (as --traces).
    #[arg(long, requires = "check_limit")]
    check_traces: Option<PathBuf>,
    /// Also leave out the prompts this classifier file was trained on, so that a rule without a
    /// classifier (the gap rule) is calibrated on the same prompts as one with it.
    #[arg(long)]
    leave_out: Option<PathBuf>,
    /// Write the budget sweep's accuracy-vs-pruning chart (SVG) to FILE.
    #[arg(long)]
    plot: Option<PathBuf>,
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
    if let Some(heads) = &mut config.features.exit_heads {
        absolute(heads);
    }
    for params in config.policy.classifiers_mut() {
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

/// The prompts of `spec`'s task and split that the config's classifier saw in training: testing
/// a guarantee on them would flatter the rule. A classifier file that does not record its prompts
/// is refused for the same split, since nothing would show the two sets apart.
fn classifier_training_prompts(
    config: &PluginConfig,
    spec: &run::EvalSpec,
) -> Result<BTreeSet<String>> {
    match config.policy.classifier(&config.policy.kind) {
        Some(Some(params)) => trained_on(&params.classifier, spec),
        _ => Ok(BTreeSet::new()),
    }
}

/// The prompts of `spec`'s task and split that the classifier in `file` was trained on.
fn trained_on(file: &Path, spec: &run::EvalSpec) -> Result<BTreeSet<String>> {
    let classifier = Classifier::load(file)?;
    used_prompts(classifier.training.and_then(|t| t.prompts), file, spec)
}

/// The prompts of `spec`'s task and split that `file` (a classifier or exit heads) records as
/// its training prompts.
fn used_prompts(
    record: Option<TrainingPrompts>,
    file: &Path,
    spec: &run::EvalSpec,
) -> Result<BTreeSet<String>> {
    let split = format!("{:?}", spec.split).to_lowercase();
    match record {
        Some(p) if p.task == spec.task.name() && p.split == split => {
            Ok(p.ids.into_iter().collect())
        }
        Some(_) => Ok(BTreeSet::new()),
        None if spec.split == Split::Test => Ok(BTreeSet::new()),
        None => bail!(
            "{}: the classifier does not record which prompts it was trained on (written before \
             `train` kept them), so calibrating on the {split} split could reuse them; collect and \
             train it again, or calibrate with --split test",
            file.display()
        ),
    }
}

/// What a rule did on a set of prompts: its disagreements with dense and its mean layers.
fn measure(outcomes: &[Replayed], prompts: &[usize]) -> (Trial, f64) {
    let disagreements = prompts
        .iter()
        .filter(|&&i| !outcomes[i].agrees_with_dense)
        .count();
    let layers = prompts
        .iter()
        .map(|&i| outcomes[i].layers as f64)
        .sum::<f64>()
        / prompts.len().max(1) as f64;
    let trial = Trial {
        disagreements,
        prompts: prompts.len(),
    };
    (trial, layers)
}

/// One candidate rule, measured once: on the test prompts (what the guarantee is tested on),
/// the selection prompts (what orders two-parameter rules) and all of them (what it costs).
struct Candidate {
    /// The config that is the rule (what is written if it is chosen).
    rule: PluginConfig,
    /// How the table shows it: (threshold column, min layer column).
    shown: (String, String),
    /// Fitted per-layer thresholds (not a grid point).
    per_layer: bool,
    test: Trial,
    /// (risk, mean layers) on the selection prompts.
    selected: (f64, f64),
    /// On all the calibration prompts (what it costs).
    measured: Measured,
}

impl Candidate {
    fn new(
        rule: PluginConfig,
        shown: (String, String),
        per_layer: bool,
        outcomes: &[Replayed],
        select: &[usize],
        test: &[usize],
    ) -> Self {
        let (on_select, layers_on_select) = measure(outcomes, select);
        Self {
            per_layer,
            rule,
            shown,
            test: measure(outcomes, test).0,
            selected: (
                on_select.disagreements as f64 / on_select.prompts.max(1) as f64,
                layers_on_select,
            ),
            measured: Measured::of(outcomes),
        }
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
    if a.check_limit.is_some() && a.split != "train" {
        bail!("--check-limit replays the rules on the test split, so calibrate on --split train");
    }
    let kind = config.policy.kind.clone();
    let thresholds = match &a.thresholds {
        Some(list) => parse_list(list).context("--thresholds")?,
        None => default_thresholds(&kind)?,
    };
    let min_layers: Vec<usize> = match &a.min_layers {
        Some(list) => parse_list(list)
            .context("--min-layers")?
            .into_iter()
            .map(|m| m as usize)
            .collect(),
        None => vec![config.limits.min_layer],
    };
    let risks = match &a.per_layer_risks {
        Some(list) => {
            let risks = parse_list(list).context("--per-layer-risks")?;
            if let Some(r) = risks.iter().find(|r| !(**r > 0.0 && **r < 1.0)) {
                bail!("--per-layer-risks: {r} is not within (0, 1)");
            }
            risks
        }
        None => Vec::new(),
    };
    let signal = match kind.as_str() {
        "top_prob_threshold" => Signal::TopProb,
        _ => Signal::Gap,
    };
    if !risks.is_empty() && !matches!(kind.as_str(), "gap_threshold" | "top_prob_threshold") {
        bail!("--per-layer-risks fits per-layer thresholds of gap_threshold or top_prob_threshold, not of {kind}");
    }
    with_threshold(&config, 0.5)?; // fail early on a static policy, before loading anything
    let mut spec = a.task.spec(&a.split, Some(a.limit), None)?;
    spec.offset = a.offset;
    spec.exclude = classifier_training_prompts(&config, &spec)?;
    if let Some(file) = &a.leave_out {
        spec.exclude.extend(trained_on(file, &spec)?);
    }
    if let Some(file) = &config.features.exit_heads {
        let heads = ExitHeads::load(file)?;
        spec.exclude
            .extend(used_prompts(Some(heads.training), file, &spec)?);
    }
    if !spec.exclude.is_empty() {
        println!(
            "left out the {} {} {:?} prompts the classifier (or exit heads) was trained on",
            spec.exclude.len(),
            spec.task,
            spec.split
        );
    }
    let engine = load_engine(&config, a.model.as_deref())?;
    let layers = engine.model.num_layers();
    if let Some(&m) = min_layers.iter().find(|&&m| m > layers) {
        bail!("--min-layers: {m} is beyond the model's {layers} layers");
    }
    let prepared = run::prepare(&engine, &spec)?;
    let config = match &prepared.scoring {
        Scoring::Labels(ids) => config.with_task_labels(ids)?,
        Scoring::FullVocab => config,
    };
    // The heads, checked against the model and labels once; recordings and the record name them.
    let heads = config
        .exit_heads(&engine.identity)?
        .map(|h| h.fingerprint());
    let n = prepared.cases.len();
    // Many-parameter rules: the front is picked on one half and only the other half tests it.
    let two_parameter = min_layers.len() > 1 || !risks.is_empty();
    let mut order: Vec<usize> = (0..n).collect();
    let (select, test) = if two_parameter {
        use rand::{seq::SliceRandom, SeedableRng};
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(a.split_seed));
        let (s, t) = order.split_at(n / 2);
        (s.to_vec(), t.to_vec())
    } else {
        (order.clone(), order)
    };
    let needed = min_prompts(epsilon, delta);
    if test.len() < needed {
        bail!(
            "{} test prompts cannot certify any rule: with ε = {epsilon} and δ = {delta} even \
             a rule that never disagrees with dense needs {needed} prompts ((1 − ε)^n ≤ δ){}; raise \
             --limit, or loosen --budget / --confidence",
            test.len(),
            if two_parameter { ", and two-parameter rules test on half of --limit" } else { "" },
        );
    }
    let traces = traces_for(
        &engine,
        &config,
        heads.as_deref(),
        &prepared,
        a.traces.as_deref(),
    )?;
    let mut candidates = Vec::new();
    for &min_layer in &min_layers {
        for &threshold in &thresholds {
            let mut rule = with_threshold(&config, threshold)?;
            rule.limits.min_layer = min_layer;
            let outcomes = replay::replay(&engine, &rule, &traces, &prepared.cases)?;
            let shown = (threshold.to_string(), min_layer.max(1).to_string());
            candidates.push(Candidate::new(
                rule, shown, false, &outcomes, &select, &test,
            ));
        }
    }
    for &risk in &risks {
        let fitted = per_layer::fit(&traces, &select, signal, risk);
        if fitted.is_empty() {
            // No block may exit: the rule is dense (an empty list would read as one threshold).
            println!("per-layer risk {risk}: no block meets it on the selection prompts; left out (dense)");
            continue;
        }
        let first = fitted
            .first()
            .map_or("none".to_string(), |t| t.layer.to_string());
        let shown = (
            format!("per layer, risk {risk} ({} blocks)", fitted.len()),
            first,
        );
        let mut rule = config.clone();
        rule.limits.min_layer = 1;
        let kind = rule.policy.kind.clone();
        if let Some(thresholds) = rule.policy.thresholds_mut(&kind) {
            thresholds.per_layer = fitted;
        }
        let outcomes = replay::replay(&engine, &rule, &traces, &prepared.cases)?;
        candidates.push(Candidate::new(rule, shown, true, &outcomes, &select, &test));
    }
    // The test order, fixed before the test prompts are looked at: by threshold from the highest
    // (one parameter), or by the selection half's risk, then layers (two parameters).
    let sequence: Vec<usize> = if two_parameter {
        let measured: Vec<(f64, f64)> = candidates.iter().map(|c| c.selected).collect();
        selection_order(&measured)
    } else {
        // One parameter: the grid's order, highest threshold first.
        let mut by_threshold: Vec<usize> = (0..candidates.len()).collect();
        by_threshold.sort_by(|&x, &y| thresholds[y].total_cmp(&thresholds[x]));
        by_threshold
    };
    let trials: Vec<Trial> = sequence.iter().map(|&i| candidates[i].test).collect();
    let certified = fixed_sequence(&trials, epsilon, delta);
    // Every rule before the first failure is certified: keep the one that runs the fewest layers.
    let layers_at = |k: usize| candidates[sequence[k]].measured.avg_layers;
    let chosen = certified
        .chosen
        .map(|last| cheapest_passed(last, layers_at));
    println!(
        "{kind} on {} {:?} rows ({n} prompts{}, {}-shot, {} prompts): certify ≤ {:.1}% disagreement \
         with dense with probability ≥ {:.0}% (Learn-then-Test, fixed sequence{})\n",
        spec.task,
        spec.split,
        if spec.offset > 0 {
            format!(" after the first {}", spec.offset)
        } else {
            String::new()
        },
        spec.shots,
        spec.prompt_format.name(),
        100.0 * epsilon,
        100.0 * a.confidence,
        if two_parameter {
            format!(
                " over {} rules ordered on {} prompts, tested on the other {}",
                candidates.len(),
                select.len(),
                test.len()
            )
        } else {
            " from the highest threshold".to_string()
        },
    );
    println!("| threshold | min layer | accuracy | avg layers | pruning ratio | disagreements (test) | p-value (risk > ε) | |");
    println!("|---|---|---|---|---|---|---|---|");
    let passed = certified.chosen.map_or(0, |last| last + 1);
    let mut hidden = 0;
    for (i, (&c, pv)) in sequence.iter().zip(&certified.p_values).enumerate() {
        let c = &candidates[c];
        let verdict = if Some(i) == chosen {
            "**chosen**"
        } else if i < passed {
            "passed"
        } else if i == passed {
            "failed: the walk stops"
        } else {
            "not tested"
        };
        // Past the walk, the grid's rows are summed up; the fitted per-layer rules are all shown.
        if i > passed + 4 && !c.per_layer {
            hidden += 1;
            continue;
        }
        println!(
            "| {} | {} | {:.1}% | {:.2} | {:.1}% | {}/{} | {pv:.3} | {verdict} |",
            c.shown.0,
            c.shown.1,
            100.0 * c.measured.accuracy,
            c.measured.avg_layers,
            100.0 * c.measured.pruning(layers),
            c.test.disagreements,
            c.test.prompts,
        );
    }
    if hidden > 0 {
        println!("| … {hidden} more threshold × min layer rules, not tested | | | | | | | |");
    }
    if a.sweep_budgets.is_some() || a.check_limit.is_some() {
        let mut budgets = match &a.sweep_budgets {
            Some(list) => parse_list(list).context("--sweep-budgets")?,
            None => Vec::new(),
        };
        if let Some(b) = budgets.iter().find(|b| !(**b > 0.0 && **b < 1.0)) {
            bail!("--sweep-budgets: {b} is not within (0, 1)");
        }
        budgets.push(epsilon);
        budgets.sort_by(f64::total_cmp);
        budgets.dedup();
        let choices = walk_budgets(&trials, &budgets, delta, layers_at);
        let check = match a.check_limit {
            Some(limit) => Some(check_prompts(
                &a,
                &engine,
                &config,
                heads.as_deref(),
                limit,
            )?),
            None => None,
        };
        let gold: Vec<Option<u32>> = prepared.cases.iter().map(|c| c.gold).collect();
        let walked = Walked {
            choices,
            rules: sequence.iter().map(|&i| &candidates[i]).collect(),
            dense: budget_sweep::dense(&traces, &gold),
            layers,
            delta,
        };
        report_budgets(&engine, &walked, check.as_ref(), &a)?;
    }
    let Some(chosen) = chosen else {
        let first = &candidates[sequence[0]];
        bail!(
            "no rule could be certified: the safest one tried (threshold {}, min layer {}) disagreed with \
             dense on {} of {} test prompts (p-value {:.3} > δ = {delta}); the budget is not relaxed — \
             try higher thresholds, more prompts, or a larger --budget",
            first.shown.0,
            first.shown.1,
            trials[0].disagreements,
            trials[0].prompts,
            certified.p_values[0],
        );
    };
    let best = &candidates[sequence[chosen]];
    let (best_trial, best_layers) = (best.test, best.measured.avg_layers);
    let mut tuned = best.rule.clone();
    if let Some(model) = &a.model {
        tuned.model.path = model.clone();
    }
    absolute_paths(&mut tuned);
    tuned.calibration = Some(CalibrationRecord {
        model: engine.identity.clone(),
        task: spec.task.name().to_string(),
        split: format!("{:?}", spec.split).to_lowercase(),
        shots: spec.shots,
        seed: spec.seed,
        prompt_format: spec.prompt_format.name().to_string(),
        label_scoring: spec.label_scoring,
        features: config.features.names.clone(),
        label_tokens: config.features.label_tokens.clone(),
        exit_heads: heads,
        policy: kind.clone(),
        epsilon,
        delta,
        prompts: best_trial.prompts,
        disagreements: best_trial.disagreements,
        p_value: certified.p_values[chosen],
    });
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| default_out(&config.source, spec.task.name()));
    let header = format!(
        "# Written by `adainfer calibrate` from {}: {kind} threshold {} (min layer {}) is the most\n\
         # aggressive rule tried that Learn-then-Test certifies: on new {} prompts like the {:?} ones it\n\
         # was tested on, at most {:.1}% of answers differ from dense, with probability ≥ {:.0}%.\n\
         # It disagreed on {} of {} test prompts and ran {best_layers:.2} of {layers} layers on average.\n\n",
        config.source.display(),
        best.shown.0,
        best.shown.1,
        spec.task,
        spec.split,
        100.0 * epsilon,
        100.0 * a.confidence,
        best_trial.disagreements,
        best_trial.prompts,
    );
    let mut doc = toml::Value::try_from(&tuned)?;
    tidy_floats(&mut doc);
    let text = format!("{header}{}", toml::to_string_pretty(&doc)?);
    // What we write must load back as the same policy.
    PluginConfig::parse(&text, &out, &[]).context("the calibrated config does not load back")?;
    write_atomically(&out, text.as_bytes())?;
    println!(
        "\nchosen: threshold {}, min layer {} (disagreement {}/{} on test prompts, p-value {:.3}; avg layers {best_layers:.2}, pruning {:.1}%); wrote {}",
        best.shown.0,
        best.shown.1,
        best_trial.disagreements,
        best_trial.prompts,
        certified.p_values[chosen],
        100.0 * best.measured.pruning(layers),
        out.display()
    );
    Ok(())
}
