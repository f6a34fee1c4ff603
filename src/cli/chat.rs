//! `adainfer chat`: a conversation in the terminal through the model's own chat template.
//! Each turn re-reads the whole history (one prefill; small models make that cheap) and streams
//! the reply; with a plugin config and `--mode early_exit`, each reply reports the layers used.

use super::generate::policy;
use super::{ConfigModelArgs, GenerationFlags, PluginArgs, SamplingFlags};
use adainfer::engine::modes::{generate_mode, Mode};
use adainfer::engine::GenerationParams;
use adainfer::serve::openai::ChatMessage;
use adainfer::serve::template::ChatTemplate;
use adainfer::Engine;
use anyhow::{bail, Result};
use std::io::{BufRead, Write};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ConfigModelArgs,
    /// A plugin config: its policy decides exits with --mode early_exit (or drafts with
    /// self_speculative), and its `[generation]` table gives the defaults of the flags below.
    #[command(flatten)]
    plugin: PluginArgs,
    /// A system message that opens the conversation.
    #[arg(long)]
    system: Option<String>,
    /// Tokens per reply, at most.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    #[command(flatten)]
    sampling: SamplingFlags,
    /// dense, early_exit or self_speculative. Default: the config's, else dense.
    #[arg(long)]
    mode: Option<Mode>,
    #[command(flatten)]
    flags: GenerationFlags,
}

fn message(role: &str, content: &str) -> ChatMessage {
    ChatMessage {
        role: role.into(),
        content: content.into(),
        name: None,
    }
}

/// The prompt text for `user_turns` (with an optional system message), as the model's chat
/// template renders it; models without a template get the plain `role: content` form.
pub fn chat_prompt(engine: &Engine, system: Option<&str>, user_turns: &[String]) -> Result<String> {
    let mut messages: Vec<ChatMessage> = system.map(|s| message("system", s)).into_iter().collect();
    messages.extend(user_turns.iter().map(|t| message("user", t)));
    ChatTemplate::for_model(&engine.chat, None)?.render(&messages)
}

pub fn run(a: Args) -> Result<()> {
    let config = a.plugin.load()?;
    let engine = a.model.load(config.as_ref())?;
    let spec = a
        .flags
        .apply_with_mode(a.mode, config.as_ref().map(|c| &c.generation));
    let mut policy = policy(&spec, config.as_ref(), &engine)?;
    let template = ChatTemplate::for_model(&engine.chat, None)?;
    if template.is_plain() {
        eprintln!("note: the model has no chat template; using plain `role: content` lines");
    }
    let params = GenerationParams {
        max_tokens: a.max_tokens,
        sampling: a.sampling.params(),
        stop_tokens: engine.eos_token_ids.clone(),
    };
    let mut history: Vec<ChatMessage> = a.system.iter().map(|s| message("system", s)).collect();
    let context = engine.config().max_position_embeddings;
    eprintln!(
        "chatting with {} ({} mode; Ctrl-D ends)",
        engine.source.path().display(),
        spec.label()
    );
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            eprintln!();
            return Ok(());
        }
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        history.push(message("user", line));
        let ids = engine.encode(&template.render(&history)?)?;
        if ids.len() + a.max_tokens > context {
            bail!(
                "the conversation has {} tokens; with --max-tokens {} it would pass the model's context of {context}",
                ids.len(),
                a.max_tokens
            );
        }
        // Decode everything so far and print what is new: a character may span tokens.
        let mut tokens = Vec::new();
        let mut shown = 0;
        let g = generate_mode(
            &engine.model,
            &ids,
            &params,
            &spec,
            policy.hook(),
            |token, _| {
                tokens.push(token);
                let text = engine.decode(&tokens)?;
                if !text.ends_with('\u{FFFD}') && text.len() > shown {
                    out.write_all(&text.as_bytes()[shown..])?;
                    out.flush()?;
                    shown = text.len();
                }
                Ok(())
            },
        )?;
        let reply = engine.decode(&g.generation.tokens)?;
        if reply.len() > shown {
            out.write_all(&reply.as_bytes()[shown..])?;
        }
        writeln!(out)?;
        let gen = &g.generation;
        eprintln!(
            "[{} tokens, {:.1} tok/s, {} layers per token on average of {}, finish: {:?}]",
            gen.tokens.len(),
            gen.decode_tokens_per_second(),
            format_args!("{:.1}", g.mean_depth()),
            engine.model.num_layers(),
            gen.finish_reason
        );
        history.push(message("assistant", &reply));
    }
}
