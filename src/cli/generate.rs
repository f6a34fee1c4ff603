use super::ModelArgs;
use adainfer::engine::early_exit::FixedExit;
use adainfer::engine::kv_fill::KvFill;
use adainfer::engine::modes::{generate_mode, Mode, ModeSpec};
use adainfer::engine::speculative::DraftSettings;
use adainfer::engine::{GenerationParams, SamplingParams};
use adainfer::LayerHook;
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
    /// dense, early_exit (lossy: each token stops where the policy says) or self_speculative
    /// (shallow drafts verified by every block: the dense output, faster).
    #[arg(long, default_value = "dense")]
    mode: Mode,
    /// How early_exit fills the K/V an exit leaves out: propagate (approximate), recompute
    /// (exact cache) or dense_after_prefill (exit in the prompt pass only).
    #[arg(long, default_value = "recompute")]
    kv_fill: KvFill,
    /// Exit (early_exit) or draft (self_speculative) after this block, counted from 1.
    #[arg(long)]
    draft_layer: Option<usize>,
    /// Drafts per self-speculative round (at most).
    #[arg(long, default_value_t = 4)]
    draft_tokens: usize,
    /// End a round's drafting after a draft whose top probability is below this (0 = off).
    #[arg(long, default_value_t = 0.0)]
    draft_confidence: f32,
    /// Print each token with the depth of the pass that chose it, the token ids and timings.
    #[arg(long)]
    verbose: bool,
}

pub fn run(a: Args) -> Result<()> {
    let engine = a.model.load()?;
    let params = GenerationParams {
        max_tokens: a.max_tokens,
        sampling: SamplingParams {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            seed: a.seed,
        },
        stop_tokens: engine.eos_token_ids.clone(),
    };
    let spec = ModeSpec {
        mode: a.mode,
        kv_fill: a.kv_fill,
        draft: DraftSettings {
            tokens: a.draft_tokens,
            min_confidence: a.draft_confidence,
        },
    };
    let mut fixed = a
        .draft_layer
        .map(|layer| FixedExit::new(layer, engine.model.num_layers()))
        .transpose()?;
    let hook = fixed.as_mut().map(|h| h as &mut dyn LayerHook);
    let ids = engine.encode(&a.prompt)?;
    let mut out = std::io::stdout().lock();
    let g = generate_mode(&engine.model, &ids, &params, &spec, hook, |token, depth| {
        if a.verbose {
            let piece = engine.decode(&[token])?;
            writeln!(out, "token {token:>6} {piece:?} depth {depth}")?;
        }
        Ok(())
    })?;
    let text = engine.decode(&g.generation.tokens)?;
    writeln!(out, "{}{}", a.prompt, text)?;
    if a.verbose {
        let gen = &g.generation;
        writeln!(out, "tokens: {:?}", gen.tokens)?;
        writeln!(
            out,
            "mode {}: prompt {} tokens, prefill {:.3}s, {} tokens decoded at {:.1} tok/s, \
             mean depth {:.2} of {}, finish: {:?}",
            spec.label(),
            gen.prompt_tokens,
            gen.prefill_seconds,
            gen.tokens.len(),
            gen.decode_tokens_per_second(),
            g.mean_depth(),
            engine.model.num_layers(),
            gen.finish_reason
        )?;
        if a.mode == Mode::SelfSpeculative {
            writeln!(
                out,
                "{} rounds, {} drafted, {} accepted ({:.1}%), mean draft depth {:.2}",
                g.rounds,
                g.drafted,
                g.accepted,
                100.0 * g.acceptance_rate(),
                g.mean_draft_depth()
            )?;
        }
    }
    Ok(())
}
