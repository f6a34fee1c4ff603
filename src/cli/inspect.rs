use super::PluginArgs;
use adainfer::engine::Outputs;
use adainfer::hook::Probe;
use adainfer::plugin::lens::LogitLens;
use adainfer::plugin::{load_engine, AdaInfer};
use adainfer::{Engine, LoadOptions};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face model directory; with --config it overrides the config's model path.
    #[arg(long, required_unless_present = "config")]
    model: Option<PathBuf>,
    /// auto, f32, bf16 or f16 (default: the config's, else auto).
    #[arg(long)]
    dtype: Option<String>,
    /// cpu, cuda, cuda:N or metal (default: the config's, else cpu).
    #[arg(long)]
    device: Option<String>,
    #[command(flatten)]
    plugin: PluginArgs,
    #[arg(long)]
    prompt: String,
    /// json or text.
    #[arg(long, default_value = "text")]
    format: String,
    /// How many top tokens per layer.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Include each layer's last-token hidden state (JSON only).
    #[arg(long)]
    hidden: bool,
}

/// Where the plugin stopped the pass (or what it skipped), layers counted from 1.
struct ExitSummary {
    layer: usize,
    policy: String,
    layers_saved: usize,
    /// 1-based layers that did not run.
    skipped: Vec<usize>,
}

pub fn run(a: Args) -> Result<()> {
    if !matches!(a.format.as_str(), "json" | "text") {
        bail!("unknown --format {:?} (expected json or text)", a.format);
    }
    let config = a.plugin.load()?;
    let engine = match &config {
        Some(c) => {
            let mut c = c.clone();
            c.model.dtype = a.dtype.clone().unwrap_or(c.model.dtype);
            c.model.device = a.device.clone().unwrap_or(c.model.device);
            load_engine(&c, a.model.as_deref())?
        }
        None => {
            let options = LoadOptions::from_names(
                a.dtype.as_deref().unwrap_or("auto"),
                a.device.as_deref().unwrap_or("cpu"),
            )?;
            let dir = a
                .model
                .as_deref()
                .context("--model or --config is required")?;
            Engine::load(dir, &options)?
        }
    };
    let ids = engine.encode(&a.prompt)?;
    // The lens pass is dense so the per-layer list covers every layer, skipped ones included.
    let mut lens = LogitLens::new(a.top_k, a.hidden);
    let mut cache = engine.model.new_cache();
    let out = engine
        .model
        .forward(&ids, &mut cache, Some(&mut lens), Outputs::LastToken)?;
    let last = Probe::from_logits(None, out.last_logits()?);
    let final_top = last.top_k(10);
    let exit = match &config {
        Some(c) => {
            let mut hook = AdaInfer::from_config(c, &engine)?;
            let mut cache = engine.model.new_cache();
            let pass =
                engine
                    .model
                    .forward(&ids, &mut cache, Some(&mut hook), Outputs::LastToken)?;
            let n = engine.model.num_layers();
            Some(ExitSummary {
                layer: pass.exit.as_ref().map_or(n, |e| e.layer),
                policy: hook.policy_name().to_string(),
                layers_saved: n - pass.layers_run,
                skipped: pass.skipped.iter().map(|i| i + 1).collect(),
            })
        }
        None => None,
    };
    let ran = |layer: usize| exit.as_ref().is_none_or(|e| !e.skipped.contains(&layer));
    if a.format == "json" {
        let layers: Vec<serde_json::Value> = lens
            .layers
            .iter()
            .map(|l| {
                let mut v = serde_json::to_value(l)?;
                if exit.is_some() {
                    v["ran"] = json!(ran(l.layer));
                }
                Ok(v)
            })
            .collect::<Result<_>>()?;
        let mut doc = json!({
            "model": engine.source.path(),
            "input_ids": ids,
            "layers": layers,
            "final": {
                "top_ids": final_top.iter().map(|t| t.0).collect::<Vec<_>>(),
                "top_probs": final_top.iter().map(|t| t.1).collect::<Vec<_>>(),
            },
        });
        if let Some(e) = &exit {
            doc["exit"] = json!({
                "layer": e.layer,
                "policy": e.policy,
                "layers_saved": e.layers_saved,
                "skipped_layers": e.skipped,
            });
        }
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let show = |id: u32| {
        engine
            .tokenizer
            .id_to_token(id)
            .unwrap_or_else(|| "?".into())
    };
    println!("{} tokens; logit lens of the last token:", ids.len());
    if let Some(e) = &exit {
        println!(
            "policy {}: output after layer {} of {} ({} layers saved)",
            e.policy,
            e.layer,
            lens.layers.len(),
            e.layers_saved
        );
    }
    println!("{:>5}  {:>6}  top tokens", "layer", "gap");
    for l in &lens.layers {
        let tops: Vec<String> = l
            .top_ids
            .iter()
            .zip(&l.top_probs)
            .map(|(&id, p)| format!("{:?} {:.3}", show(id), p))
            .collect();
        let mark = if ran(l.layer) { "" } else { "  (skipped)" };
        println!("{:>5}  {:>6.3}  {}{mark}", l.layer, l.gap, tops.join(", "));
    }
    Ok(())
}
