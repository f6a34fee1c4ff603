use super::PluginArgs;
use adainfer::eval::tasks::{answer_text, load_examples, prompt, Split, Task};
use adainfer::plugin::features::FeatureExtractor;
use adainfer::plugin::load_engine;
use adainfer::plugin::training::{collect_rows, write_data, CollectPrompt, DataHeader};
use anyhow::{anyhow, bail, Context, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    plugin: PluginArgs,
    /// Overrides the config's model path.
    #[arg(long)]
    model: Option<PathBuf>,
    /// sst2 or agnews.
    #[arg(long)]
    task: String,
    /// train or test.
    #[arg(long, default_value = "train")]
    split: String,
    /// The first N examples of the split (default: all).
    #[arg(long)]
    limit: Option<usize>,
    /// Where to write the rows (JSON lines).
    #[arg(long)]
    out: PathBuf,
    /// final: label 1 iff the layer's top-1 equals the final layer's (paper eq. 1);
    /// gold: iff it equals the gold answer token.
    #[arg(long, default_value = "final")]
    label: String,
}

pub fn run(a: Args) -> Result<()> {
    let config = a.plugin.load()?.context("collect needs --config FILE")?;
    let gold = match a.label.as_str() {
        "final" => false,
        "gold" => true,
        other => bail!("--label {other:?}: expected final or gold"),
    };
    let task = Task::parse(&a.task)?;
    let split = Split::parse(&a.split)?;
    let engine = load_engine(&config, a.model.as_deref())?;
    let features =
        FeatureExtractor::new(&config.features.names, config.features.label_tokens.clone())?;
    let examples = load_examples(task, split, a.limit)?;
    let prompts = examples
        .iter()
        .map(|e| {
            let answer = answer_text(&e.label_word);
            let ids = engine
                .tokenizer
                .encode(answer.as_str(), false)
                .map_err(|err| anyhow!("cannot tokenize {answer:?}: {err}"))?;
            let gold_token = match ids.get_ids() {
                [one] => Some(*one),
                _ if gold => bail!("gold answer {answer:?} is not a single token"),
                _ => None,
            };
            Ok(CollectPrompt {
                id: e.id.clone(),
                text: prompt(e),
                gold_token,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let header = DataHeader {
        identity: engine.identity.clone(),
        features: features.names(),
        label: a.label.clone(),
        label_tokens: config.features.label_tokens.clone(),
        task: a.task.clone(),
        split: a.split.clone(),
    };
    let rows = collect_rows(&engine, features, &prompts, gold)?;
    write_data(&a.out, &header, &rows)?;
    let positive = rows.iter().filter(|r| r.label == 1).count();
    println!(
        "collected {} rows ({} prompts × {} layers), label {}: {:.1}% label 1; wrote {}",
        rows.len(),
        prompts.len(),
        engine.model.num_layers(),
        a.label,
        100.0 * positive as f64 / rows.len().max(1) as f64,
        a.out.display()
    );
    Ok(())
}
