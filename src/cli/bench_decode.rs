use adainfer::engine::early_exit::FixedExit;
use adainfer::engine::kv_fill::KvFill;
use adainfer::engine::speculative::DraftSettings;
use adainfer::engine::synthetic::SyntheticSpec;
use adainfer::engine::{GenerationParams, SamplingParams};
use adainfer::eval::bench_decode::{bench_decode, markdown_table, parse_modes};
use adainfer::{Engine, LoadOptions};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face model directory.
    #[arg(
        long,
        default_value = "models/tiny-llama-sst2-agnews",
        conflicts_with = "synthetic"
    )]
    model: PathBuf,
    /// Benchmark a random-weight model of this shape instead: smollm2-135m (30 × 576).
    #[arg(long)]
    synthetic: Option<String>,
    /// Tokenizer for prompts on a synthetic model (the shared 4,096-token one).
    #[arg(long, default_value = "models/tiny-llama-sst2-agnews/tokenizer.json")]
    tokenizer: PathBuf,
    /// f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// SST-2 `text<TAB>label` file; prompts are `Q: {text}\nA:`.
    #[arg(long, default_value = "../shared/data/sst2/dev.tsv")]
    sst2: PathBuf,
    /// How many prompts (the file's first rows).
    #[arg(long, default_value_t = 20)]
    prompts: usize,
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// Comma-separated: dense, early_exit[/FILL], self_speculative[/k=N]; `all` = dense, the
    /// three KV fills and self-speculative.
    #[arg(long, default_value = "all")]
    modes: String,
    /// KV fill for a bare `early_exit`.
    #[arg(long, default_value = "recompute")]
    kv_fill: KvFill,
    /// Exit / draft after this block (1-based).
    #[arg(long)]
    draft_layer: usize,
    /// Drafts per round for a bare `self_speculative`.
    #[arg(long, default_value_t = 4)]
    draft_tokens: usize,
    /// Draft confidence floor for a bare `self_speculative` (0 = off).
    #[arg(long, default_value_t = 0.0)]
    draft_confidence: f32,
    /// markdown or json.
    #[arg(long, default_value = "markdown")]
    format: String,
}

fn sst2_prompts(path: &PathBuf, count: usize) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read SST-2 file {}", path.display()))?;
    let prompts: Vec<String> = text
        .lines()
        .skip(1)
        .filter_map(|line| line.split('\t').next())
        .map(|x| format!("Q: {}\nA:", x.trim()))
        .take(count)
        .collect();
    if prompts.is_empty() {
        bail!(
            "{} holds no prompts (expected a header and `text<TAB>label` rows)",
            path.display()
        );
    }
    Ok(prompts)
}

pub fn run(a: Args) -> Result<()> {
    if !matches!(a.format.as_str(), "markdown" | "json") {
        bail!("--format must be markdown or json, got {:?}", a.format);
    }
    let options = LoadOptions::from_names(&a.dtype, &a.device)?;
    let (model, tokenizer, stop_tokens, name) = match &a.synthetic {
        Some(shape) if shape == "smollm2-135m" => {
            let tokenizer = tokenizers::Tokenizer::from_file(&a.tokenizer).map_err(|e| {
                anyhow::anyhow!("cannot load tokenizer {}: {e}", a.tokenizer.display())
            })?;
            let model = SyntheticSpec::smollm2_135m_shape().build(options.dtype)?;
            (
                model,
                tokenizer,
                Vec::new(),
                "random-weight 30×576 (SmolLM2-135M shape)".to_string(),
            )
        }
        Some(other) => bail!("unknown --synthetic shape {other:?}: expected smollm2-135m"),
        None => {
            let engine = Engine::load(&a.model, &options)?;
            (
                engine.model,
                engine.tokenizer,
                engine.eos_token_ids,
                a.model.display().to_string(),
            )
        }
    };
    let prompts = sst2_prompts(&a.sst2, a.prompts)?
        .iter()
        .map(|p| {
            tokenizer
                .encode(p.as_str(), true)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| anyhow::anyhow!("cannot tokenize prompt {p:?}: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let draft = DraftSettings {
        tokens: a.draft_tokens,
        min_confidence: a.draft_confidence,
    };
    let modes = parse_modes(&a.modes, a.kv_fill, draft)?;
    let mut hook = FixedExit::new(a.draft_layer, model.num_layers())?;
    let params = GenerationParams {
        max_tokens: a.max_tokens,
        sampling: SamplingParams::greedy(),
        stop_tokens,
    };
    let reports = bench_decode(&model, &prompts, &params, &modes, &mut hook)?;
    if a.format == "json" {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        println!(
            "{name}: {} SST-2 prompts, greedy, up to {} tokens, exit/draft layer {} of {}, {}\n",
            prompts.len(),
            a.max_tokens,
            a.draft_layer,
            model.num_layers(),
            a.dtype
        );
        print!("{}", markdown_table(&reports));
    }
    Ok(())
}
