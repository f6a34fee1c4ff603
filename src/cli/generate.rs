use super::ModelArgs;
use adainfer::engine::SamplingParams;
use anyhow::Result;
use std::io::Write;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the token ids and timings too.
    #[arg(long)]
    verbose: bool,
}

pub fn run(a: Args) -> Result<()> {
    let engine = a.model.load()?;
    let sampling = SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
    };
    let (g, text) = engine.generate_text(&a.prompt, a.max_tokens, sampling)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}{}", a.prompt, text)?;
    if a.verbose {
        writeln!(out, "tokens: {:?}", g.tokens)?;
        writeln!(
            out,
            "prompt {} tokens, prefill {:.3}s, {} tokens decoded at {:.1} tok/s, finish: {:?}",
            g.prompt_tokens,
            g.prefill_seconds,
            g.tokens.len(),
            g.decode_tokens_per_second(),
            g.finish_reason
        )?;
    }
    Ok(())
}
