use super::chat::chat_prompt;
use super::{ConfigModelArgs, PluginArgs};
use adainfer::engine::generate::generate_dense;
use adainfer::engine::modes::{Mode, ModeSpec};
use adainfer::engine::speculative::{DraftSource, MAX_DRAFT_TOKENS};
use adainfer::engine::{GenerationParams, SamplingParams};
use adainfer::eval::bench_decode::{bench_decode, markdown_table};
use adainfer::eval::skip_search::{
    leaders, path_table, search, Calibration, CostModel, SkipCandidate,
};
use adainfer::eval::workloads::Workload;
use anyhow::{bail, Context, Result};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    plugin: PluginArgs,
    #[command(flatten)]
    model: ConfigModelArgs,
    /// Calibration workload: squad, rewrite or chat (chat has only 8 prompts, the ones
    /// bench-decode measures on).
    #[arg(long, default_value = "squad")]
    workload: String,
    /// Calibration prompts.
    #[arg(long, default_value_t = 8)]
    prompts: usize,
    /// Skip this many of the workload's prompts first, so calibration and bench-decode (which
    /// takes the first ones) do not share prompts.
    #[arg(long, default_value_t = 64)]
    offset: usize,
    /// Dense tokens generated per calibration prompt (the positions scored).
    #[arg(long, default_value_t = 32)]
    tokens: usize,
    /// Most drafts per round the objective considers.
    #[arg(long, default_value_t = 6)]
    max_drafts: usize,
    /// Most blocks left out (default: half the model's).
    #[arg(long)]
    max_skipped: Option<usize>,
    /// Stop after this many sizes without a better set.
    #[arg(long, default_value_t = 2)]
    patience: usize,
    /// Decode with this many of the best predicted sets (and dense) on the calibration prompts
    /// and pick the one measured fastest.
    #[arg(long, default_value_t = 3)]
    measure: usize,
    /// markdown or json.
    #[arg(long, default_value = "markdown")]
    format: String,
}

/// Timings per row count behind the cost model (medians).
const COST_REPEATS: usize = 11;

pub fn run(a: Args) -> Result<()> {
    if !matches!(a.format.as_str(), "markdown" | "json") {
        bail!("--format must be markdown or json, got {:?}", a.format);
    }
    if a.prompts == 0 || a.tokens < 2 || a.max_drafts == 0 || a.measure == 0 {
        bail!("--prompts, --max-drafts and --measure must be at least 1, --tokens at least 2");
    }
    if a.max_drafts > MAX_DRAFT_TOKENS {
        bail!(
            "--max-drafts is at most {MAX_DRAFT_TOKENS}, got {}",
            a.max_drafts
        );
    }
    let config = a.plugin.load()?;
    let engine = a.model.load(config.as_ref())?;
    let workload = Workload::parse(&a.workload)?;
    let mut messages = workload.messages(a.offset + a.prompts)?;
    let messages = messages.split_off(a.offset.min(messages.len()));
    let params = GenerationParams {
        max_tokens: a.tokens,
        sampling: SamplingParams::greedy(),
        stop_tokens: engine.eos_token_ids.clone(),
    };
    let mut pairs = Vec::new();
    for m in &messages {
        let prompt = engine.encode(&chat_prompt(&engine, None, std::slice::from_ref(m))?)?;
        let dense = generate_dense(&engine.model, &prompt, &params, |_| Ok(()))?;
        if dense.tokens.len() >= 2 {
            pairs.push((prompt, dense.tokens));
        }
    }
    if pairs.is_empty() {
        bail!("no calibration prompt gave 2 or more tokens");
    }
    let mut calibration = Calibration::new(&engine.model, &pairs)?;
    let costs = CostModel::measure(&engine.model, &pairs[0].0, a.max_drafts + 1, COST_REPEATS)
        .context("timing passes")?;
    let n = engine.model.num_layers();
    let path = search(
        &engine.model,
        &mut calibration,
        &costs,
        a.max_skipped.unwrap_or(n / 2),
        a.patience,
    )?;
    // The predicted leaders, decoded for real (dense first, the modes interleaved per prompt):
    // the pick is the one measured fastest.
    let leaders = leaders(&path, a.measure);
    if leaders.is_empty() {
        bail!("the search tried no set that leaves a block out");
    }
    let modes: Vec<ModeSpec> = std::iter::once(ModeSpec::dense())
        .chain(leaders.iter().map(skip_mode))
        .collect();
    let prompts: Vec<Vec<u32>> = pairs.iter().map(|p| p.0.clone()).collect();
    let measured = bench_decode(&engine.model, &prompts, &params, &modes, None)?.reports;
    let (pick, report) = leaders
        .iter()
        .zip(&measured[1..])
        .max_by(|x, y| x.1.speedup_vs_dense.total_cmp(&y.1.speedup_vs_dense))
        .context("internal: no measured leader")?;
    if a.format == "json" {
        let json = serde_json::json!({
            "costs": costs,
            "positions": calibration.positions(),
            "path": path,
            "measured": measured,
            "pick": pick,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!(
        "{}: {} {} prompts from #{} (chat template), {} positions of dense continuation scored \
         teacher-forced; a block is {:.1}% of a one-row step; a pass of 2..={} rows costs {} \
         one-row steps\n",
        engine.source.path().display(),
        pairs.len(),
        workload.name(),
        a.offset,
        calibration.positions(),
        100.0 * costs.block_share,
        costs.verify.len(),
        costs.verify[1..]
            .iter()
            .map(|c| format!("{c:.2}"))
            .collect::<Vec<_>>()
            .join(" / "),
    );
    println!(
        "Greedy search, best set of each size:\n\n{}",
        path_table(&path)
    );
    println!(
        "The {} best predicted, decoded on the same prompts (greedy, up to {} tokens):\n\n{}",
        leaders.len(),
        a.tokens,
        markdown_table(&measured)
    );
    println!(
        "Pick: leave out blocks {} ({} drafts per round): measured {:.2}× dense, predicted {:.2}×. \
         In a plugin config:\n  [generation.draft]\n  source = \"skip_layers\"\n  tokens = {}\n  \
         skip = {:?}\nor: bench-decode --modes dense,{}",
        pick.skip,
        pick.drafts,
        report.speedup_vs_dense,
        pick.speedup,
        pick.drafts,
        Vec::<usize>::from(pick.skip),
        skip_mode(pick).label(),
    );
    if report.speedup_vs_dense < 1.0 {
        println!(
            "\nNo set tried decodes faster than dense on this model: leave skip-layer drafts off here."
        );
    }
    Ok(())
}

/// Skip-layer speculation with a candidate's blocks and draft count.
fn skip_mode(c: &SkipCandidate) -> ModeSpec {
    let mut spec = ModeSpec {
        mode: Mode::SelfSpeculative,
        ..ModeSpec::dense()
    };
    spec.draft.source = DraftSource::SkipLayers;
    spec.draft.skip = c.skip;
    spec.draft.tokens = c.drafts.max(1);
    spec
}
