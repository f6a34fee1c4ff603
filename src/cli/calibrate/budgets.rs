//! What `calibrate` keeps and reports beside the one certified rule: recorded passes read from or
//! written to a file, the rule each budget certifies, and those rules on prompts calibration
//! never saw.

use super::super::eval::progress;
use super::{Args, Candidate};
use adainfer::eval::budget_sweep::{dense, oracle, BudgetChoice, Measured};
use adainfer::eval::plots::{pruning_chart, ChartPoint};
use adainfer::eval::replay::{self, PromptTrace};
use adainfer::eval::{run, trace_file};
use adainfer::plugin::classifier::write_atomically;
use adainfer::plugin::PluginConfig;
use adainfer::Engine;
use anyhow::Result;
use std::path::Path;

/// The dense passes of `prepared`, read from `file` when it exists (and was recorded on these
/// prompts, through the exit heads of fingerprint `heads`), else recorded, and written to `file`
/// when one is named.
pub(super) fn traces_for(
    engine: &Engine,
    config: &PluginConfig,
    heads: Option<&str>,
    prepared: &run::Prepared,
    file: Option<&Path>,
) -> Result<Vec<PromptTrace>> {
    if let Some(path) = file.filter(|p| p.exists()) {
        let traces = trace_file::load(
            path,
            &engine.identity,
            &prepared.scoring,
            &config.features.names,
            heads,
            &prepared.cases,
        )?;
        println!(
            "read {} recorded passes from {}",
            traces.len(),
            path.display()
        );
        return Ok(traces);
    }
    let bar = progress(prepared.cases.len(), "dense passes, every block probed");
    let traces = replay::record(engine, config, prepared, || bar.inc(1))?;
    bar.finish_and_clear();
    if let Some(path) = file {
        trace_file::save(
            path,
            &engine.identity,
            &prepared.scoring,
            &config.features.names,
            heads,
            &prepared.cases,
            &traces,
        )?;
        println!("recorded {} passes into {}", traces.len(), path.display());
    }
    Ok(traces)
}

/// Prompts calibration never sees, with their dense passes: the check of every chosen rule.
pub(super) struct Check {
    prepared: run::Prepared,
    traces: Vec<PromptTrace>,
    dense: Measured,
    oracle: Measured,
    /// The oracle reads the answers exits give: the exit heads' where the config has them.
    oracle_name: &'static str,
}

pub(super) fn check_prompts(
    a: &Args,
    engine: &Engine,
    config: &PluginConfig,
    heads: Option<&str>,
    limit: usize,
) -> Result<Check> {
    let spec = a.task.spec("test", Some(limit), None)?;
    let prepared = run::prepare(engine, &spec)?;
    let traces = traces_for(engine, config, heads, &prepared, a.check_traces.as_deref())?;
    let gold: Vec<Option<u32>> = prepared.cases.iter().map(|c| c.gold).collect();
    let dense = dense(&traces, &gold);
    let oracle = oracle(&traces, &gold);
    let oracle_name = match config.features.exit_heads {
        Some(_) => "oracle of the exit heads",
        None => "oracle",
    };
    Ok(Check {
        prepared,
        traces,
        dense,
        oracle,
        oracle_name,
    })
}

/// What the calibration walk left to report: each budget's choice among `rules` (the candidates
/// in test order), and dense on the calibration prompts (the answer where nothing is certified).
pub(super) struct Walked<'a> {
    pub choices: Vec<BudgetChoice>,
    pub rules: Vec<&'a Candidate>,
    pub dense: Measured,
    pub layers: usize,
    pub delta: f64,
}

/// The rule each budget certifies, what it costs on the calibration prompts and, with a check
/// set, what it does on prompts calibration never saw; and the chart of that curve (on the check
/// prompts where there are some, else on the calibration prompts).
pub(super) fn report_budgets(
    engine: &Engine,
    walked: &Walked,
    check: Option<&Check>,
    a: &Args,
) -> Result<()> {
    let Walked {
        choices,
        rules,
        dense,
        layers,
        delta,
    } = walked;
    let (layers, delta) = (*layers, *delta);
    let pct = |x: f64| format!("{:.1}%", 100.0 * x);
    // 1 − 0.9 prints as 0.09999999999999998.
    let delta = format!("{delta:.6}");
    let delta = delta.trim_end_matches('0');
    println!("\nThe rule each budget certifies (δ = {delta}; each ε on its own):\n");
    let mut head = "| ε | rule (threshold, min layer) | disagreements (test) | p-value | pruning (calibration) |".to_string();
    if let Some(c) = check {
        head += &format!(" check ({} test-split prompts): accuracy | agreement with dense | avg layers | pruning |", c.traces.len());
    }
    println!("{head}");
    println!(
        "|---|---|---|---|---|{}",
        if check.is_some() {
            "---|---|---|---|"
        } else {
            ""
        }
    );
    let mut curve = Vec::new();
    for choice in choices {
        let rule = choice.chosen.map(|i| rules[i]);
        let (shown, tested, p, pruning) = match rule {
            Some(r) => (
                format!("{}, {}", r.shown.0, r.shown.1),
                format!("{}/{}", r.test.disagreements, r.test.prompts),
                format!("{:.3}", choice.p_value.unwrap_or(1.0)),
                pct(r.measured.pruning(layers)),
            ),
            None => (
                "none certified: dense".into(),
                "–".into(),
                "–".into(),
                pct(0.0),
            ),
        };
        let mut line = format!(
            "| {} | {shown} | {tested} | {p} | {pruning} |",
            pct(choice.epsilon)
        );
        // The curve's point: the rule on the check prompts, else on the calibration prompts.
        let point = match (check, rule) {
            (Some(c), Some(r)) => Measured::of(&replay::replay(
                engine,
                &r.rule,
                &c.traces,
                &c.prepared.cases,
            )?),
            (Some(c), None) => c.dense,
            (None, Some(r)) => r.measured,
            (None, None) => *dense,
        };
        if check.is_some() {
            line += &format!(
                " {} | {} | {:.2} | {} |",
                pct(point.accuracy),
                pct(point.agreement),
                point.avg_layers,
                pct(point.pruning(layers))
            );
        }
        curve.push(ChartPoint {
            label: format!("ε {}", pct(choice.epsilon)),
            pruning: 100.0 * point.pruning(layers),
            accuracy: 100.0 * point.accuracy,
        });
        println!("{line}");
    }
    let mut arms = Vec::new();
    if let Some(c) = check {
        for (name, m) in [("dense", c.dense), (c.oracle_name, c.oracle)] {
            println!(
                "| – | {name} | – | – | – | {} | {} | {:.2} | {} |",
                pct(m.accuracy),
                pct(m.agreement),
                m.avg_layers,
                pct(m.pruning(layers))
            );
            arms.push(ChartPoint {
                label: name.into(),
                pruning: 100.0 * m.pruning(layers),
                accuracy: 100.0 * m.accuracy,
            });
        }
    }
    if let Some(path) = &a.plot {
        let on = if check.is_some() {
            "check prompts"
        } else {
            "calibration prompts"
        };
        let svg = pruning_chart(
            &format!("{}: certified rule by budget ε ({on})", a.task.task),
            "the rule each ε certifies",
            &curve,
            &arms,
        )?;
        write_atomically(path, svg.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
