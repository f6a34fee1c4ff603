//! Other engines timed in the same `bench` run: llama.cpp's own `llama-bench` on the same GGUF
//! file (built by `../shared/tools/build-llama-cpp.sh`), and the process's peak memory.
//!
//! llama-bench times prefill (`pp`: a prompt of N tokens into an empty context) and decode
//! (`tg`: N tokens generated one by one) as separate tests. Our decode follows the prompt, so
//! llama.cpp's decode is taken at the same depth (`-d 0,P`: its `tg` after P tokens of context).

use super::bench::{BenchSpec, Throughput};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;
use std::process::Command;

/// One row of `llama-bench -o json`.
#[derive(Debug, Deserialize)]
struct LlamaBenchRow {
    n_prompt: usize,
    n_gen: usize,
    /// Tokens already in the context when the test starts.
    #[serde(default)]
    n_depth: usize,
    /// Tokens per second, mean over llama-bench's repetitions.
    avg_ts: f64,
}

/// Run `binary` (llama-bench) on `model` with `threads` threads, as many repetitions as
/// `spec.repeats`, and return its prefill and decode speed.
pub fn llama_bench(
    binary: &Path,
    model: &Path,
    threads: usize,
    spec: &BenchSpec,
) -> Result<Throughput> {
    let output = Command::new(binary)
        .arg("-m")
        .arg(model)
        .args(["-t", &threads.to_string()])
        .args(["-p", &spec.prompt_tokens.to_string()])
        .args(["-n", &spec.decode_tokens.to_string()])
        .args(["-d", &format!("0,{}", spec.prompt_tokens)])
        .args(["-r", &spec.repeats.to_string()])
        .args(["-o", "json"])
        .output()
        .with_context(|| format!("cannot run llama-bench at {}", binary.display()))?;
    if !output.status.success() {
        bail!(
            "llama-bench failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    parse_llama_bench(&String::from_utf8_lossy(&output.stdout), spec)
}

fn parse_llama_bench(json: &str, spec: &BenchSpec) -> Result<Throughput> {
    let rows: Vec<LlamaBenchRow> =
        serde_json::from_str(json).context("llama-bench printed no JSON list of results")?;
    let find = |prompt: usize, gen: usize, depth: usize| {
        rows.iter()
            .find(|r| r.n_prompt == prompt && r.n_gen == gen && r.n_depth == depth)
            .map(|r| r.avg_ts)
            .with_context(|| {
                format!("llama-bench printed no test with n_prompt {prompt}, n_gen {gen}, n_depth {depth}")
            })
    };
    let prefill = find(spec.prompt_tokens, 0, 0)?;
    let decode = find(0, spec.decode_tokens, spec.prompt_tokens)?;
    Ok(Throughput {
        engine: "llama.cpp".into(),
        prefill_seconds: spec.prompt_tokens as f64 / prefill,
        decode_seconds: spec.decode_tokens as f64 / decode,
        prefill_tokens_per_second: prefill,
        decode_tokens_per_second: decode,
    })
}

/// This process's peak resident memory in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_llama_bench_json() {
        let spec = BenchSpec {
            prompt_tokens: 128,
            decode_tokens: 32,
            repeats: 5,
        };
        let json = r#"[{"model_type": "llama ?B Q4_1", "n_prompt": 128, "n_gen": 0, "n_depth": 0, "avg_ts": 280.5, "stddev_ts": 3.1},
                       {"model_type": "llama ?B Q4_1", "n_prompt": 0, "n_gen": 32, "n_depth": 0, "avg_ts": 150.0, "stddev_ts": 1.0},
                       {"model_type": "llama ?B Q4_1", "n_prompt": 0, "n_gen": 32, "n_depth": 128, "avg_ts": 130.25, "stddev_ts": 1.0}]"#;
        let t = parse_llama_bench(json, &spec).unwrap();
        assert_eq!(t.prefill_tokens_per_second, 280.5);
        assert_eq!(t.decode_tokens_per_second, 130.25);
        let e = parse_llama_bench("[]", &spec).unwrap_err().to_string();
        assert!(e.contains("n_prompt 128"), "{e}");
        assert!(parse_llama_bench("not json", &spec).is_err());
    }

    #[test]
    fn peak_memory_is_read() {
        assert!(peak_rss_bytes().unwrap() > 0);
    }
}
