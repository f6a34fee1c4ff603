use super::eval::progress;
use super::TrainingPromptArgs;
use adainfer::eval::ab::Scoring;
use adainfer::eval::run;
use adainfer::plugin::exit_heads_fit::{fit, record, HeadsSpec};
use adainfer::plugin::load_engine;
use anyhow::{bail, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Heads score label tokens, so label scoring is always on.
    #[command(flatten)]
    prompts: TrainingPromptArgs,
    /// Where to write the heads (JSON).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let (config, mut spec) = a.prompts.load("train-heads")?;
    spec.label_scoring = true;
    if spec.task.is_generative() {
        bail!(
            "exit heads score a classification task's label tokens (sst2, agnews, mmlu, csqa), not {}",
            spec.task.name()
        );
    }
    let engine = load_engine(&config, a.prompts.model.as_deref())?;
    let Scoring::Labels(label_tokens) = run::scoring(&engine, &spec)? else {
        bail!("label scoring is on, so the task has label tokens");
    };
    let prepared = run::prepare(&engine, &spec)?;
    let prompts: Vec<(String, Vec<u32>)> = prepared
        .cases
        .iter()
        .map(|c| (c.example.id.clone(), c.tokens.clone()))
        .collect();
    let bar = progress(prompts.len(), "dense passes, hidden states recorded");
    let recorded = record(&engine, &label_tokens, &prompts, || bar.inc(1))?;
    bar.finish_and_clear();
    let heads_spec = HeadsSpec {
        engine: &engine,
        task: spec.task.name().to_string(),
        split: format!("{:?}", spec.split).to_lowercase(),
        label_tokens,
        holdout: config.train.holdout,
        seed: config.train.seed,
        params: config.train.exit_heads.clone(),
    };
    let heads = fit(&heads_spec, &recorded)?;
    heads.save(&a.out)?;
    println!(
        "{} exit heads over {} labels from {} {}-shot {} prompts ({} held out, alpha {}); wrote {}",
        heads.heads.len(),
        heads.classes.len(),
        recorded.len(),
        spec.shots,
        spec.prompt_format.name(),
        (recorded.len() as f64 * heads_spec.holdout).round(),
        heads.alpha,
        a.out.display()
    );
    println!(
        "held-out agreement with dense, block 1 → {}:",
        heads.heads.len()
    );
    let shown: Vec<String> = heads
        .holdout_agreement
        .iter()
        .map(|a| a.map_or("–".to_string(), |a| format!("{:.0}", 100.0 * a)))
        .collect();
    println!("{}", shown.join(" "));
    Ok(())
}
