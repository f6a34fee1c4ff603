//! The plugin's subcommands as a user runs them: inspect --config, collect, train.

mod common;

use common::adainfer;

const CONFIG: &str = "plugin-configs/tiny-llama-sst2-agnews-gap_threshold.toml";

#[test]
fn inspect_reports_the_exit_and_every_layer() {
    let (ok, out, err) = adainfer(&[
        "inspect",
        "--config",
        CONFIG,
        "--set",
        "policy.threshold=0.5",
        "--prompt",
        "Q: the plot is dull and the acting is worse .\nA:",
        "--format",
        "json",
    ]);
    assert!(ok, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let layers = doc["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 12);
    let exit = doc["exit"]["layer"].as_u64().unwrap() as usize;
    assert_eq!(doc["exit"]["policy"], "gap_threshold");
    assert_eq!(
        doc["exit"]["layers_saved"].as_u64().unwrap() as usize,
        12 - exit
    );
    // The exit is the first layer whose gap reaches 0.5; later layers did not run.
    let first = layers
        .iter()
        .position(|l| l["gap"].as_f64().unwrap() >= 0.5)
        .unwrap()
        + 1;
    assert_eq!(exit, first);
    for l in layers {
        let n = l["layer"].as_u64().unwrap() as usize;
        assert_eq!(l["ran"].as_bool().unwrap(), n <= exit);
    }
}

#[test]
fn config_errors_name_the_key_and_the_file() {
    let dir = std::env::temp_dir().join(format!("adainfer-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[model]\npath = \"m\"\n\n[limits]\nmin_layerz = 2\n").unwrap();
    let (ok, _, err) = adainfer(&[
        "inspect",
        "--config",
        bad.to_str().unwrap(),
        "--prompt",
        "Q: x\nA:",
    ]);
    std::fs::remove_dir_all(&dir).ok();
    assert!(!ok);
    assert!(
        err.contains("min_layerz") && err.contains("bad.toml"),
        "{err}"
    );
    let (ok, _, err) = adainfer(&[
        "inspect",
        "--config",
        CONFIG,
        "--set",
        "policy.kind=svn",
        "--prompt",
        "Q: x\nA:",
    ]);
    assert!(!ok);
    assert!(err.contains("svn") && err.contains("logistic"), "{err}");
}

#[test]
fn collect_then_train_writes_a_loadable_classifier() {
    let dir = std::env::temp_dir().join(format!("adainfer-loop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("rows.jsonl");
    let model = dir.join("logistic.json");
    let (ok, out, err) = adainfer(&[
        "collect",
        "--config",
        CONFIG,
        "--task",
        "agnews",
        "--split",
        "train",
        "--limit",
        "12",
        "--label",
        "gold",
        "--out",
        data.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("144 rows"), "{out}");
    let (ok, out, err) = adainfer(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--classifier",
        "logistic",
        "--out",
        model.to_str().unwrap(),
        "--config",
        CONFIG,
        "--set",
        "train.holdout=0.25",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("precision") && out.contains("held out 3 prompts"),
        "{out}"
    );
    let (ok, _, err) = adainfer(&[
        "inspect",
        "--config",
        CONFIG,
        "--set",
        "policy.kind=logistic",
        "--set",
        &format!("policy.classifier={}", model.display()),
        "--prompt",
        "Q: Stocks fall.\nA:",
    ]);
    std::fs::remove_dir_all(&dir).ok();
    assert!(ok, "{err}");
}

/// `collect` builds its prompts as `eval` does: demonstrations, label-restricted features.
#[test]
fn collect_takes_evals_prompt_settings() {
    let dir = std::env::temp_dir().join(format!("adainfer-collect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("rows.jsonl");
    let (ok, out, err) = adainfer(&[
        "collect",
        "--config",
        CONFIG,
        "--task",
        "sst2",
        "--shots",
        "2",
        "--label-scoring",
        "--limit",
        "4",
        "--out",
        data.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("4 2-shot qa prompts"), "{out}");
    // The header records the task's label tokens the features were read over.
    let header: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&data)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let tokens = header["header"]["label_tokens"]
        .as_array()
        .unwrap_or_else(|| panic!("no label_tokens in {header}"));
    assert_eq!(tokens.len(), 2);
    let (ok, _, err) = adainfer(&[
        "collect",
        "--config",
        CONFIG,
        "--task",
        "squad",
        "--limit",
        "1",
        "--out",
        data.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("classification task"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
