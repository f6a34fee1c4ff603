use super::TrainingPromptArgs;
use adainfer::eval::ab::{answer_token, Scoring};
use adainfer::eval::run;
use adainfer::plugin::load_engine;
use adainfer::plugin::training::{collect_rows, write_data, CollectPrompt, DataHeader};
use anyhow::{bail, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    prompts: TrainingPromptArgs,
    /// Where to write the rows (JSON lines).
    #[arg(long)]
    out: PathBuf,
    /// final: label 1 iff the layer's top-1 equals the final layer's (paper eq. 1);
    /// gold: iff it equals the gold answer token.
    #[arg(long, default_value = "final")]
    label: String,
}

pub fn run(a: Args) -> Result<()> {
    let (config, spec) = a.prompts.load("collect")?;
    let gold = match a.label.as_str() {
        "final" => false,
        "gold" => true,
        other => bail!("--label {other:?}: expected final or gold"),
    };
    if spec.task.is_generative() {
        bail!(
            "collect needs a classification task (sst2, agnews, mmlu, csqa), not {}",
            spec.task.name()
        );
    }
    let engine = load_engine(&config, a.prompts.model.as_deref())?;
    // Label-scored rows read their features (and top-1) over the task's label tokens.
    let config = match run::scoring(&engine, &spec)? {
        Scoring::Labels(ids) => config.with_task_labels(&ids)?,
        Scoring::FullVocab => config,
    };
    let features = config.feature_extractor(&engine.identity)?;
    let (examples, prompts) = run::select(&engine, &spec)?;
    let prompts = examples
        .iter()
        .map(|e| {
            let gold_token = match answer_token(&engine, &e.label_word, spec.prompt_format) {
                Ok(id) => Some(id),
                Err(e) if gold => return Err(e),
                Err(_) => None,
            };
            Ok(CollectPrompt {
                id: e.id.clone(),
                text: prompts.text(e)?,
                gold_token,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let header = DataHeader {
        identity: engine.identity.clone(),
        features: features.names(),
        label: a.label.clone(),
        label_tokens: config.features.label_tokens.clone(),
        task: spec.task.name().to_string(),
        split: format!("{:?}", spec.split).to_lowercase(),
    };
    let rows = collect_rows(&engine, features, &prompts, gold)?;
    write_data(&a.out, &header, &rows)?;
    let positive = rows.iter().filter(|r| r.label == 1).count();
    println!(
        "collected {} rows ({} {}-shot {} prompts × {} layers), label {}: {:.1}% label 1; wrote {}",
        rows.len(),
        prompts.len(),
        spec.shots,
        spec.prompt_format.name(),
        engine.model.num_layers(),
        a.label,
        100.0 * positive as f64 / rows.len().max(1) as f64,
        a.out.display()
    );
    Ok(())
}
