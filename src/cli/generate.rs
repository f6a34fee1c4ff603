use super::chat::chat_prompt;
use super::{ConfigModelArgs, GenerationFlags, PluginArgs, SamplingFlags};
use adainfer::engine::early_exit::FixedExit;
use adainfer::engine::modes::{generate_mode, Mode, ModeSpec};
use adainfer::engine::GenerationParams;
use adainfer::plugin::AdaInfer;
use adainfer::{Engine, LayerHook};
use anyhow::{Context, Result};
use std::io::Write;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ConfigModelArgs,
    /// The plugin's policy decides exits (early_exit) and draft depth (self_speculative); its
    /// `[generation]` table gives the defaults of the flags below.
    #[command(flatten)]
    plugin: PluginArgs,
    #[arg(long)]
    prompt: String,
    /// Send the prompt as a user message through the model's chat template (one-shot chat).
    #[arg(long)]
    chat: bool,
    /// With --chat: a system message before the prompt.
    #[arg(long, requires = "chat")]
    system: Option<String>,
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    #[command(flatten)]
    sampling: SamplingFlags,
    /// dense, early_exit (lossy: each token stops where the policy says) or self_speculative
    /// (shallow drafts verified by every block: the dense output). Default: dense.
    #[arg(long)]
    mode: Option<Mode>,
    #[command(flatten)]
    flags: GenerationFlags,
    /// Print each token with the depth of the pass that chose it, the token ids and timings.
    #[arg(long)]
    verbose: bool,
}

/// Who decides exits / draft depth: the fixed layer if one is set, else the plugin's policy.
pub(super) enum Policy {
    Fixed(FixedExit),
    Plugin(Box<AdaInfer>),
    None,
}

impl Policy {
    pub(super) fn hook(&mut self) -> Option<&mut dyn LayerHook> {
        match self {
            Policy::Fixed(h) => Some(h),
            Policy::Plugin(h) => Some(h.as_mut()),
            Policy::None => None,
        }
    }
}

pub(super) fn policy(
    spec: &ModeSpec,
    config: Option<&adainfer::plugin::PluginConfig>,
    engine: &Engine,
) -> Result<Policy> {
    Ok(match (spec.fixed_layer, config) {
        // Dense, and prompt-lookup drafts (from the context, not the model's layers).
        _ if !spec.needs_policy() => Policy::None,
        (Some(layer), _) => Policy::Fixed(
            FixedExit::new(layer, engine.model.num_layers())
                .context("--draft-layer / [generation] fixed_layer")?,
        ),
        (None, Some(c)) => {
            c.refuse_exit_heads_for("generation")?;
            Policy::Plugin(Box::new(AdaInfer::from_config(c, engine)?))
        }
        (None, None) => Policy::None,
    })
}

pub fn run(a: Args) -> Result<()> {
    let config = a.plugin.load()?;
    let engine = a.model.load(config.as_ref())?;
    let spec = a
        .flags
        .apply_with_mode(a.mode, config.as_ref().map(|c| &c.generation));
    let mut policy = policy(&spec, config.as_ref(), &engine)?;
    let params = GenerationParams {
        max_tokens: a.max_tokens,
        sampling: a.sampling.params(),
        stop_tokens: engine.eos_token_ids.clone(),
    };
    let prompt = if a.chat {
        chat_prompt(&engine, a.system.as_deref(), &[a.prompt.clone()])?
    } else {
        a.prompt.clone()
    };
    let ids = engine.encode(&prompt)?;
    let mut out = std::io::stdout().lock();
    let g = generate_mode(
        &engine.model,
        &ids,
        &params,
        &spec,
        policy.hook(),
        |token, depth| {
            if a.verbose {
                let piece = engine.decode(&[token])?;
                writeln!(out, "token {token:>6} {piece:?} depth {depth}")?;
            }
            Ok(())
        },
    )?;
    let text = engine.decode(&g.generation.tokens)?;
    if a.chat {
        writeln!(out, "{text}")?;
    } else {
        writeln!(out, "{}{}", a.prompt, text)?;
    }
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
        if spec.mode == Mode::SelfSpeculative {
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
