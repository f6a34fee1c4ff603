//! `adainfer bench`: dense prefill / decode tokens per second, and with the `mistralrs` feature
//! the same run on stock mistral.rs and the ratio.

use adainfer::engine::synthetic::SyntheticSpec;
use adainfer::eval::bench::{self, BenchSpec, Contender, DenseContender};
use adainfer::eval::peers;
use adainfer::{Engine, LoadOptions};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face model directory or `.gguf` file to benchmark.
    #[arg(
        long,
        conflicts_with = "synthetic",
        required_unless_present = "synthetic"
    )]
    model: Option<PathBuf>,
    /// Build a random-weight model of a known shape instead (only `smollm2-135m`: 30 × 576).
    #[arg(long)]
    synthetic: Option<String>,
    /// Tokenizer copied into the synthetic model directory.
    #[arg(long, default_value = "models/tiny-llama-sst2-agnews/tokenizer.json")]
    tokenizer: PathBuf,
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    #[arg(long, default_value_t = 32)]
    decode_tokens: usize,
    /// Timed repeats per engine (after one warm-up run); the median is reported.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Only our engine, even when built with the `mistralrs` feature.
    #[arg(long)]
    no_mistralrs: bool,
    /// llama.cpp's `llama-bench` binary: time it on the same GGUF file in this run
    /// (`../shared/tools/build-llama-cpp.sh` builds it).
    #[arg(long)]
    llama_bench: Option<PathBuf>,
    /// auto (f32 for safetensors, the file's own types for GGUF), f32, bf16 or f16.
    #[arg(long, default_value = "auto")]
    dtype: String,
    /// Also time N requests decoded together vs one after another (the server's batching).
    #[arg(long)]
    batch: Option<usize>,
    /// text or json.
    #[arg(long, default_value = "text")]
    format: String,
}

/// A synthetic model written to a temporary directory, removed on drop.
struct TempModel(PathBuf);

impl Drop for TempModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn synthetic(name: &str, tokenizer: &Path) -> Result<TempModel> {
    let spec = match name {
        "smollm2-135m" => SyntheticSpec::smollm2_135m_shape(),
        other => bail!("unknown --synthetic model {other:?}; known: smollm2-135m"),
    };
    if !tokenizer.is_file() {
        bail!(
            "tokenizer {} not found (run from the repository root or pass --tokenizer)",
            tokenizer.display()
        );
    }
    let dir = std::env::temp_dir().join(format!("adainfer-bench-{name}-{}", std::process::id()));
    let model = TempModel(dir);
    spec.write_dir(&model.0, tokenizer, 1)
        .with_context(|| format!("cannot write the synthetic model to {}", model.0.display()))?;
    Ok(model)
}

pub fn run(a: Args) -> Result<()> {
    if a.format != "text" && a.format != "json" {
        bail!("--format must be text or json, got {:?}", a.format);
    }
    let temp = match &a.synthetic {
        Some(name) => Some(synthetic(name, &a.tokenizer)?),
        None => None,
    };
    let dir = match (&temp, &a.model) {
        (Some(t), _) => t.0.clone(),
        (None, Some(m)) => m.clone(),
        (None, None) => bail!("give --model DIR or --synthetic NAME"),
    };
    let engine = Engine::load(&dir, &LoadOptions::from_names(&a.dtype, "cpu")?)?;
    let loaded_rss = peers::peak_rss_bytes();
    let spec = BenchSpec {
        prompt_tokens: a.prompt_tokens,
        decode_tokens: a.decode_tokens,
        repeats: a.repeats,
    };
    adainfer::engine::generate::check_request(
        &engine.model,
        &bench::bench_prompt(spec.prompt_tokens, 1),
        spec.decode_tokens + 1,
    )?;
    let ours = DenseContender { engine: &engine };
    let stock = load_stock(&dir, a.no_mistralrs)?;
    let mut contenders: Vec<&dyn Contender> = Vec::new();
    contenders.push(&ours);
    if let Some(s) = &stock {
        contenders.push(s.as_ref());
    }
    let vocab = engine.config().vocab_size;
    let mut report = bench::run(&contenders, &spec, vocab)?;
    if let Some(binary) = &a.llama_bench {
        if !adainfer::engine::gguf::is_gguf_path(&dir) {
            bail!("--llama-bench needs --model FILE.gguf");
        }
        report
            .results
            .push(peers::llama_bench(binary, &dir, report.threads, &spec)?);
    }
    let ratio = report.ratio_to("mistral.rs");
    let llama_ratio = report.ratio_to("llama.cpp");
    let file_bytes = std::fs::metadata(&dir)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    let batched = match a.batch {
        Some(n) => Some(bench::batch_throughput(&engine, &spec, n)?),
        None => None,
    };
    if a.format == "json" {
        let mut doc = serde_json::to_value(&report)?;
        if let Some((prefill, decode)) = ratio {
            doc["ratio_to_mistralrs"] = serde_json::json!({"prefill": prefill, "decode": decode});
        }
        if let Some((prefill, decode)) = llama_ratio {
            doc["ratio_to_llama_cpp"] = serde_json::json!({"prefill": prefill, "decode": decode});
        }
        doc["peak_rss_after_load_bytes"] = serde_json::json!(loaded_rss);
        doc["model_file_bytes"] = serde_json::json!(file_bytes);
        if let Some(b) = &batched {
            doc["batch"] = serde_json::to_value(b)?;
        }
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let id = &engine.identity;
    println!(
        "model {} ({} layers x {} hidden, {}, dtype {}), CPU, {} threads; prompt {} tokens, decode {} tokens, median of {} (warm-up excluded)",
        dir.display(),
        id.num_layers,
        id.hidden_size,
        engine.source.format(),
        a.dtype,
        report.threads,
        spec.prompt_tokens,
        spec.decode_tokens,
        spec.repeats
    );
    for t in &report.results {
        println!(
            "{:<16} prefill {:>9.1} tok/s ({:.3} s)   decode {:>7.1} tok/s ({:.3} s)",
            t.engine,
            t.prefill_tokens_per_second,
            t.prefill_seconds,
            t.decode_tokens_per_second,
            t.decode_seconds
        );
    }
    if let Some((p, d)) = ratio {
        println!("adainfer / mistral.rs: prefill {p:.2}x, decode {d:.2}x");
    }
    if let Some((p, d)) = llama_ratio {
        println!("adainfer / llama.cpp: prefill {p:.2}x, decode {d:.2}x");
    }
    if let Some(rss) = loaded_rss {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        match file_bytes {
            Some(f) => println!(
                "peak RSS after loading: {:.1} MiB ({:.2}x the {:.1} MiB model file)",
                mib(rss),
                rss as f64 / f as f64,
                mib(f)
            ),
            None => println!("peak RSS after loading: {:.1} MiB", mib(rss)),
        }
    }
    if let Some(b) = batched {
        println!(
            "{} requests, {} tokens each: one at a time {:.1} tok/s, batched {:.1} tok/s: {:.2}x",
            b.batch,
            spec.decode_tokens,
            b.sequential_tokens_per_second,
            b.batched_tokens_per_second,
            b.speedup
        );
    }
    Ok(())
}

#[cfg(feature = "mistralrs")]
fn load_stock(dir: &Path, skip: bool) -> Result<Option<Box<dyn Contender>>> {
    if skip {
        return Ok(None);
    }
    let options = adainfer::mistralrs::StockOptions { stop_at_eos: false };
    match adainfer::mistralrs::StockMistralRs::load(dir, &options) {
        Ok(stock) => Ok(Some(Box::new(stock))),
        // A peer that cannot run this model is left out of the table, and the reason said.
        Err(e) => {
            eprintln!("mistral.rs is not timed: {e:#}");
            Ok(None)
        }
    }
}

#[cfg(not(feature = "mistralrs"))]
fn load_stock(_dir: &Path, _skip: bool) -> Result<Option<Box<dyn Contender>>> {
    Ok(None)
}
