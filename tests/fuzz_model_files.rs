//! A seeded mutation fuzzer over the files users hand us: GGUF files, safetensors files and
//! `config.json` (downloaded from strangers), and plugin configs and classifier files. Every mutant must load or fail with an error — never
//! panic, abort, or allocate by an unchecked field. The mutants run in a child process under a
//! 4 GiB address-space cap (`ulimit -v`), so an allocation sized by a hostile count kills the
//! child and fails the test, naming the case.
//!
//! `ADAINFER_FUZZ_CASES` sets the number of cases per file kind (CI: the default below);
//! `ADAINFER_FUZZ_SEED` the seed, for longer runs outside CI.

mod common;

use adainfer::engine::gguf::writer::write_hf_dir_as_gguf;
use adainfer::{Engine, LoadOptions};
use candle_core::quantized::GgmlDType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

const DEFAULT_CASES: usize = 2000;
const CHILD: &str = "ADAINFER_FUZZ_CHILD";

fn cases() -> usize {
    std::env::var("ADAINFER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

fn seed() -> u64 {
    std::env::var("ADAINFER_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(11)
}

/// Values that break code trusting a count or a length.
const HOSTILE: [u64; 9] = [
    0,
    1,
    u64::MAX,
    u64::MAX / 2,
    1 << 32,
    1 << 40,
    (1 << 31) - 1,
    0xFFFF_FFFF,
    1 << 62,
];

/// One mutant of `good`, whose interesting bytes (the header) are `good[..header]`.
fn mutate(good: &[u8], header: usize, rng: &mut StdRng) -> (String, Vec<u8>) {
    let mut b = good.to_vec();
    let header = header.min(b.len()).max(16);
    match rng.random_range(0..6) {
        0 => {
            let at = rng.random_range(0..b.len());
            b.truncate(at);
            (format!("truncate at {at}"), b)
        }
        1 => {
            let n = rng.random_range(1..9);
            for _ in 0..n {
                let at = rng.random_range(0..header);
                b[at] ^= 1 << rng.random_range(0..8);
            }
            (format!("flip {n} bits"), b)
        }
        2 => {
            let at = rng.random_range(0..header - 8);
            let v = HOSTILE[rng.random_range(0..HOSTILE.len())];
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
            (format!("u64 {v} at {at}"), b)
        }
        3 => {
            let at = rng.random_range(0..header - 4);
            let v: u32 = if rng.random_bool(0.5) {
                rng.random_range(0..48)
            } else {
                u32::MAX - rng.random_range(0..4)
            };
            b[at..at + 4].copy_from_slice(&v.to_le_bytes());
            (format!("u32 {v} at {at}"), b)
        }
        4 => {
            let at = rng.random_range(0..header);
            let len = rng.random_range(1..64).min(b.len() - at);
            let copy = b[at..at + len].to_vec();
            let to = rng.random_range(0..header);
            b.splice(to..to, copy);
            (format!("insert {len} bytes at {to}"), b)
        }
        _ => {
            let at = rng.random_range(0..header);
            let len = rng.random_range(1..64).min(b.len() - at);
            b.drain(at..at + len);
            (format!("remove {len} bytes at {at}"), b)
        }
    }
}

/// Load `path` and require `Ok` or `Err`; a panic fails with the case's description.
fn must_not_panic(path: &Path, what: &str) -> bool {
    let result = std::panic::catch_unwind(|| {
        let _ = Engine::load(path, &LoadOptions::default());
    });
    if result.is_err() {
        eprintln!("PANIC on {what}");
    }
    result.is_ok()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("adainfer-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Where the header of a GGUF file ends: the first tensor's data (the file's largest part).
fn gguf_header_len(path: &Path) -> usize {
    let file = adainfer::engine::gguf::GgufFile::open(path).unwrap();
    file.content.tensor_data_offset as usize
}

fn fuzz_gguf(rng: &mut StdRng, n: usize) -> usize {
    let dir = scratch("gguf");
    let good_path = dir.join("good.gguf");
    let model = common::shared().join("reference/random-qwen2");
    write_hf_dir_as_gguf(&model, &good_path, GgmlDType::Q4_0).unwrap();
    let good = std::fs::read(&good_path).unwrap();
    let header = gguf_header_len(&good_path);
    let path = dir.join("mutant.gguf");
    let mut panics = 0;
    for case in 0..n {
        let (what, bytes) = mutate(&good, header, rng);
        std::fs::write(&path, &bytes).unwrap();
        // Printed before the load: if the child is killed, the last line names the case.
        eprintln!("gguf case {case}: {what}");
        panics += usize::from(!must_not_panic(&path, &format!("gguf case {case}: {what}")));
    }
    std::fs::remove_dir_all(dir).unwrap();
    panics
}

fn fuzz_safetensors(rng: &mut StdRng, n: usize) -> usize {
    let dir = scratch("safetensors");
    let model = common::shared().join("reference/random-gemma3");
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(model.join(f), dir.join(f)).unwrap();
    }
    let good = std::fs::read(model.join("model.safetensors")).unwrap();
    let header = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut panics = 0;
    for case in 0..n {
        let (what, bytes) = mutate(&good, header, rng);
        std::fs::write(dir.join("model.safetensors"), &bytes).unwrap();
        eprintln!("safetensors case {case}: {what}");
        panics += usize::from(!must_not_panic(
            &dir,
            &format!("safetensors case {case}: {what}"),
        ));
    }
    std::fs::remove_dir_all(dir).unwrap();
    panics
}

/// `config.json` with one numeric field set to a hostile value (or the wrong type).
fn fuzz_config(rng: &mut StdRng, n: usize) -> usize {
    let dir = scratch("config");
    let model = common::shared().join("reference/random-gemma3");
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(model.join(f), dir.join(f)).unwrap();
    }
    let good: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    let keys: Vec<String> = good.as_object().unwrap().keys().cloned().collect();
    let values = [
        serde_json::json!(0),
        serde_json::json!(-1),
        serde_json::json!(1u64 << 40),
        serde_json::json!(u64::MAX),
        serde_json::json!(1e300),
        serde_json::json!("many"),
        serde_json::json!(null),
        serde_json::json!([1, 2]),
        serde_json::json!({"rope_type": "linear"}),
    ];
    let mut panics = 0;
    for case in 0..n {
        let mut config = good.clone();
        let key = &keys[rng.random_range(0..keys.len())];
        let value = values[rng.random_range(0..values.len())].clone();
        config[key] = value.clone();
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let what = format!("config case {case}: {key} = {value}");
        eprintln!("{what}");
        panics += usize::from(!must_not_panic(&dir, &what));
    }
    std::fs::remove_dir_all(dir).unwrap();
    panics
}

/// A hostile TOML value for a plugin-config line.
const TOML_VALUES: [&str; 12] = [
    "-1",
    "1e400",
    "nan",
    "inf",
    "99999999999999999999",
    "\"x\"",
    "true",
    "[",
    "[1, 2]",
    "{ a = 1 }",
    "\"/\"",
    "\"../../../../etc/passwd\"",
];

/// Plugin configs (a value replaced, a line dropped, duplicated or added) and their classifier
/// files (byte mutations), each built into a hook on the vendored model.
fn fuzz_plugin_files(rng: &mut StdRng, n: usize) -> usize {
    let dir = scratch("plugin");
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugin-configs");
    std::fs::create_dir_all(dir.join("classifiers")).unwrap();
    let classifiers: Vec<PathBuf> = std::fs::read_dir(shipped.join("classifiers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let configs: Vec<String> = ["svm", "logistic", "gap_threshold", "unified_skip"]
        .iter()
        .map(|k| {
            let text =
                std::fs::read_to_string(shipped.join(format!("tiny-llama-sst2-agnews-{k}.toml")))
                    .unwrap();
            // The copy lives elsewhere: point it at the vendored model by absolute path.
            let model = common::task_model();
            text.lines()
                .map(|l| {
                    if l.starts_with("path = ") {
                        format!("path = {:?}", model.display().to_string())
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    let engine = Engine::load(&common::task_model(), &LoadOptions::default()).unwrap();
    let path = dir.join("config.toml");
    let mut panics = 0;
    for case in 0..n {
        for c in &classifiers {
            std::fs::copy(c, dir.join("classifiers").join(c.file_name().unwrap())).unwrap();
        }
        let mut lines: Vec<String> = configs[rng.random_range(0..configs.len())]
            .lines()
            .map(String::from)
            .collect();
        let what = match rng.random_range(0..5) {
            0 | 1 => {
                let candidates: Vec<usize> = (0..lines.len())
                    .filter(|&i| lines[i].contains(" = "))
                    .collect();
                let i = candidates[rng.random_range(0..candidates.len())];
                let key = lines[i].split(" = ").next().unwrap().to_string();
                let value = TOML_VALUES[rng.random_range(0..TOML_VALUES.len())];
                lines[i] = format!("{key} = {value}");
                format!("{key} = {value}")
            }
            2 => {
                let i = rng.random_range(0..lines.len());
                format!("line {i} dropped: {:?}", lines.remove(i))
            }
            3 => {
                let i = rng.random_range(0..lines.len());
                lines.insert(i, "bogus_key = 1".into());
                format!("unknown key at line {i}")
            }
            _ => {
                let c = &classifiers[rng.random_range(0..classifiers.len())];
                let good = std::fs::read(c).unwrap();
                let (m, bytes) = mutate(&good, good.len(), rng);
                std::fs::write(dir.join("classifiers").join(c.file_name().unwrap()), bytes)
                    .unwrap();
                format!("{}: {m}", c.file_name().unwrap().to_string_lossy())
            }
        };
        std::fs::write(&path, lines.join("\n")).unwrap();
        let what = format!("plugin case {case}: {what}");
        eprintln!("{what}");
        // The engine is only read; a panic mid-build cannot leave it half-changed.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if let Ok(config) = adainfer::plugin::PluginConfig::load(&path, &[]) {
                let _ = adainfer::plugin::AdaInfer::from_config(&config, &engine);
            }
        }));
        if result.is_err() {
            eprintln!("PANIC on {what}");
            panics += 1;
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
    panics
}

/// The fuzzer's body; runs only inside the capped child `model_files_survive_mutation` starts.
#[test]
fn fuzz_child_process() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    // Quiet the default hook: a panic is counted and named, not printed with a backtrace.
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = StdRng::seed_from_u64(seed());
    let n = cases();
    let panics = fuzz_gguf(&mut rng, n)
        + fuzz_safetensors(&mut rng, n)
        + fuzz_config(&mut rng, n / 3)
        + fuzz_plugin_files(&mut rng, n / 2);
    eprintln!("FUZZ DONE: {panics} panics");
    assert_eq!(panics, 0);
}

#[test]
fn model_files_survive_mutation() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg("ulimit -v 4194304 && exec \"$0\" --exact fuzz_child_process --nocapture --test-threads=1")
        .arg(&exe)
        .env(CHILD, "1")
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = err.lines().rev().take(12).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    let panics: Vec<&str> = err.lines().filter(|l| l.starts_with("PANIC")).collect();
    assert!(
        out.status.success() && err.contains("FUZZ DONE: 0 panics"),
        "the fuzzer failed ({}); panics: {panics:#?}\nlast lines:\n{}",
        out.status,
        tail.join("\n")
    );
}
