use super::ModelArgs;
use adainfer::engine::Outputs;
use adainfer::hook::Probe;
use adainfer::plugin::lens::LogitLens;
use anyhow::{bail, Result};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
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

pub fn run(a: Args) -> Result<()> {
    if !matches!(a.format.as_str(), "json" | "text") {
        bail!("unknown --format {:?} (expected json or text)", a.format);
    }
    let engine = a.model.load()?;
    let ids = engine.encode(&a.prompt)?;
    let mut lens = LogitLens::new(a.top_k, a.hidden);
    let mut cache = engine.model.new_cache();
    let out = engine
        .model
        .forward(&ids, &mut cache, Some(&mut lens), Outputs::LastToken)?;
    let last = Probe::from_logits(None, out.last_logits()?);
    let final_top = last.top_k(10);
    if a.format == "json" {
        let doc = json!({
            "model": engine.files.dir,
            "input_ids": ids,
            "layers": lens.layers,
            "final": {
                "top_ids": final_top.iter().map(|t| t.0).collect::<Vec<_>>(),
                "top_probs": final_top.iter().map(|t| t.1).collect::<Vec<_>>(),
            },
        });
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
    println!("{:>5}  {:>6}  top tokens", "layer", "gap");
    for l in &lens.layers {
        let tops: Vec<String> = l
            .top_ids
            .iter()
            .zip(&l.top_probs)
            .map(|(&id, p)| format!("{:?} {:.3}", show(id), p))
            .collect();
        println!("{:>5}  {:>6.3}  {}", l.layer, l.gap, tops.join(", "));
    }
    Ok(())
}
