use super::chat::chat_prompt;
use super::generate::policy;
use super::{ConfigModelArgs, GenerationFlags, PluginArgs};
use adainfer::engine::modes::{Mode, ModeSpec};
use adainfer::engine::synthetic::SyntheticSpec;
use adainfer::engine::{GenerationParams, SamplingParams};
use adainfer::eval::bench_decode::{
    bench_decode, markdown_table, parse_modes, verify_cost_table, verify_costs,
};
use adainfer::eval::lookup_ceiling::{ceiling_table, lookup_ceilings};
use adainfer::eval::tasks::{self, Split, Task};
use adainfer::eval::workloads::Workload;
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
    #[arg(long, default_value = "sst2", conflicts_with = "workloads")]
    task: String,
    /// Instead of --task: comma-separated chat workloads, each its own table — squad (a
    /// passage and a question, answer quoted), rewrite (a paragraph with one change), chat
    /// (open prompts), or all.
    #[arg(long)]
    workloads: Option<String>,
    /// How many prompts (per workload).
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
    /// Also time one full-model pass of 1..=N rows after the first prompt (the price of
    /// verifying N − 1 drafts) and print it against one row.
    #[arg(long, default_value_t = 0)]
    verify_cost_rows: usize,
    /// Also bound what prompt-lookup speculation with 1..=K drafts per round could reach on each
    /// workload: dense's answers replayed round by round, priced with the measured pass costs
    /// (times passes of up to K + 1 rows).
    #[arg(long, default_value_t = 0)]
    lookup_ceiling: usize,
    /// markdown or json.
    #[arg(long, default_value = "markdown")]
    format: String,
}

/// Timings per row count behind the verification-cost table (its median).
const COST_REPEATS: usize = 21;

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
    let modes = parse_modes(&a.modes, base.kv_fill, base.draft)?;
    let needs_policy = modes.iter().any(ModeSpec::needs_policy);
    let mut policy = match needs_policy {
        true => policy(&base, config.as_ref(), &engine)?,
        false => super::generate::Policy::None,
    };
    let policy_name = match (base.fixed_layer, &config) {
        _ if !needs_policy => "no exit policy".to_string(),
        (Some(layer), _) => format!("fixed exit/draft layer {layer}"),
        (None, Some(c)) => format!("plugin policy {}", c.policy.kind),
        (None, None) => bail!("give --draft-layer or a plugin --config to decide exits"),
    };
    // (name, description, token prompts) per table.
    let sets = match &a.workloads {
        None => {
            let task = Task::parse(&a.task)?;
            let prompts = tasks::load_examples(task, Split::Test, Some(a.prompts))?
                .iter()
                .map(|e| engine.encode(&tasks::prompt(e)))
                .collect::<Result<Vec<_>>>()?;
            vec![(
                task.name().to_string(),
                "Q:/A: prompts".to_string(),
                prompts,
            )]
        }
        Some(list) => {
            let names: Vec<&str> = match list.trim() {
                "all" => Workload::ALL.iter().map(|w| w.name()).collect(),
                list => list.split(',').map(str::trim).collect(),
            };
            let mut sets = Vec::new();
            for name in names {
                let workload = Workload::parse(name)?;
                let prompts = workload
                    .messages(a.prompts)?
                    .iter()
                    .map(|m| engine.encode(&chat_prompt(&engine, None, std::slice::from_ref(m))?))
                    .collect::<Result<Vec<_>>>()?;
                let what = format!("{}, chat template", workload.description());
                sets.push((workload.name().to_string(), what, prompts));
            }
            sets
        }
    };
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
    let name = match &a.synthetic {
        Some(shape) => format!("random-weight {shape} shape"),
        None => engine.source.path().display().to_string(),
    };
    let mut json = serde_json::Map::new();
    let cost_rows = match a.lookup_ceiling {
        0 => a.verify_cost_rows,
        k => a.verify_cost_rows.max(k + 1),
    };
    let mut costs = Vec::new();
    if cost_rows > 0 {
        costs = verify_costs(&engine.model, &sets[0].2[0], cost_rows, COST_REPEATS)?;
        if a.format == "json" {
            json.insert("verify_costs".into(), serde_json::to_value(&costs)?);
        } else {
            println!(
                "{name}: one full-model pass of N rows after a {}-token prompt (median of \
                 {COST_REPEATS}, row counts taking turns), against one row\n\n{}",
                sets[0].2[0].len(),
                verify_cost_table(&costs)
            );
        }
    }
    for (set, what, prompts) in &sets {
        let bench = bench_decode(&engine.model, prompts, &params, &modes, policy.hook())?;
        let reports = bench.reports;
        let ceilings = match a.lookup_ceiling {
            0 => None,
            k => {
                let ngram = base.draft.ngram;
                Some(lookup_ceilings(
                    prompts,
                    &bench.dense_answers,
                    ngram,
                    k,
                    &costs,
                )?)
            }
        };
        if a.format == "json" {
            json.insert(set.clone(), serde_json::to_value(&reports)?);
            if let Some(c) = &ceilings {
                json.insert(format!("{set}_lookup_ceiling"), serde_json::to_value(c)?);
            }
            continue;
        }
        println!(
            "{name} ({} blocks, {}): {} {set} prompts ({what}), greedy, up to {} tokens, {policy_name}\n",
            engine.model.num_layers(),
            a.dtype.as_deref().unwrap_or("config/auto"),
            prompts.len(),
            a.max_tokens,
        );
        println!("{}", markdown_table(&reports));
        if let Some(c) = &ceilings {
            println!(
                "Prompt lookup's ceiling on these answers (dense's text replayed, n-grams up to {}; \
                 passes priced with the costs above):\n\n{}",
                base.draft.ngram,
                ceiling_table(c)
            );
        }
    }
    if a.format == "json" {
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    Ok(())
}
