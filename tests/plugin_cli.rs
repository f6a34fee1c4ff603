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
    // A subset of the collected features trains its own classifier (Table 6 from one collect).
    let subset = dir.join("top_prob.json");
    let train_on = |features: &str| {
        adainfer(&[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--classifier",
            "logistic",
            "--out",
            subset.to_str().unwrap(),
            "--features",
            features,
        ])
    };
    let (ok, out, err) = train_on("top_prob");
    assert!(ok, "{err}");
    assert!(out.contains("on features [\"top_prob\"]"), "{out}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&subset).unwrap()).unwrap();
    assert_eq!(saved["features"], serde_json::json!(["top_prob"]));
    let (ok, _, err) = train_on("top_prob,cos_mlp");
    assert!(!ok);
    assert!(
        err.contains("collected without feature \"cos_mlp\"") && err.contains("rows.jsonl"),
        "{err}"
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
    assert!(ok, "{err}");
    // The classifier names the prompts it learned from, and calibrating on the same split
    // leaves them out: a guarantee tested on them would flatter the rule.
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&model).unwrap()).unwrap();
    let trained_on = &saved["training"]["prompts"];
    assert_eq!(
        (trained_on["task"].as_str(), trained_on["split"].as_str()),
        (Some("agnews"), Some("train"))
    );
    assert_eq!(trained_on["ids"].as_array().map(Vec::len), Some(12));
    let calibrated = dir.join("calibrated.toml");
    let (ok, out, err) = adainfer(&[
        "calibrate",
        "--config",
        CONFIG,
        "--set",
        "policy.kind=logistic",
        "--set",
        &format!("policy.classifier={}", model.display()),
        "--task",
        "agnews",
        "--limit",
        "6",
        "--thresholds",
        "0.9,0.5",
        "--budget",
        "0.9",
        "--confidence",
        "0.5",
        "--out",
        calibrated.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains(
            "left out the 12 agnews Train prompts the classifier (or exit heads) was trained on"
        ),
        "{out}"
    );
    // A rule without a classifier can be calibrated on the same prompts as one with it.
    let (ok, out, err) = adainfer(&[
        "calibrate",
        "--config",
        CONFIG,
        "--task",
        "agnews",
        "--limit",
        "6",
        "--budget",
        "0.9",
        "--confidence",
        "0.5",
        "--leave-out",
        model.to_str().unwrap(),
        "--out",
        calibrated.to_str().unwrap(),
    ]);
    std::fs::remove_dir_all(&dir).ok();
    assert!(ok, "{err}");
    assert!(
        out.contains(
            "left out the 12 agnews Train prompts the classifier (or exit heads) was trained on"
        ) && out.contains("gap_threshold on agnews Train rows (6 prompts"),
        "{out}"
    );
}

/// A classifier file that does not say what it was trained on cannot be calibrated on the
/// split it may have come from; the test split is still open to it.
#[test]
fn calibrate_refuses_a_classifier_that_may_have_seen_its_prompts() {
    let (ok, _, err) = adainfer(&[
        "calibrate",
        "--config",
        CONFIG,
        "--set",
        "policy.kind=svm",
        "--task",
        "sst2",
        "--limit",
        "4",
    ]);
    assert!(!ok);
    assert!(
        err.contains("tiny-llama-sst2-agnews-sst2-svm.json")
            && err.contains("does not record which prompts"),
        "{err}"
    );
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

/// A classifier trained over one task's label tokens is refused on another task's, naming the
/// tokens and the switch; with `any_task` (the paper's inter-task Table 5) it runs there.
#[test]
fn a_classifier_runs_on_another_task_only_when_asked() {
    let dir = std::env::temp_dir().join(format!("adainfer-any-task-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (data, model) = (dir.join("rows.jsonl"), dir.join("logistic.json"));
    let (ok, _, err) = adainfer(&[
        "collect",
        "--config",
        CONFIG,
        "--task",
        "sst2",
        "--label-scoring",
        "--split",
        "train",
        "--limit",
        "8",
        "--label",
        "gold",
        "--out",
        data.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = adainfer(&[
        "train",
        "--config",
        CONFIG,
        "--data",
        data.to_str().unwrap(),
        "--classifier",
        "logistic",
        "--out",
        model.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let classifier = format!("policy.classifier={}", model.display());
    let eval_agnews = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--config",
            CONFIG,
            "--set",
            "policy.kind=logistic",
            "--set",
            &classifier,
            "--task",
            "agnews",
            "--label-scoring",
            "--limit",
            "3",
            "--arms",
            "dense,adaptive",
        ];
        args.extend_from_slice(extra);
        adainfer(&args)
    };
    let (ok, _, err) = eval_agnews(&[]);
    assert!(!ok, "an SST-2 classifier ran on AG News labels unasked");
    assert!(
        err.contains("made for label_tokens") && err.contains("any_task = true"),
        "{err}"
    );
    let (ok, out, err) = eval_agnews(&["--set", "policy.logistic.any_task=true"]);
    std::fs::remove_dir_all(&dir).ok();
    assert!(ok, "{err}");
    assert!(out.contains("adaptive"), "{out}");
}

/// Exit heads as a user makes and uses them: `train-heads` writes them and shows where they
/// agree with dense, `calibrate` leaves their training prompts out and records which heads it
/// certified with, and heads from another run or for another task's labels are refused.
#[test]
fn train_heads_then_calibrate_and_eval_with_them() {
    let dir = std::env::temp_dir().join(format!("adainfer-heads-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let heads = dir.join("heads.json");
    let other = dir.join("other.json");
    let calibrated = dir.join("calibrated.toml");
    let p = |p: &std::path::Path| p.to_str().unwrap().to_string();
    for (file, limit) in [(&heads, "30"), (&other, "20")] {
        let (ok, out, err) = adainfer(&[
            "train-heads",
            "--config",
            CONFIG,
            "--task",
            "sst2",
            "--limit",
            limit,
            "--out",
            &p(file),
        ]);
        assert!(ok, "{err}");
        assert!(
            out.contains(&format!(
                "11 exit heads over 2 labels from {limit} 0-shot qa"
            )),
            "{out}"
        );
        assert!(
            out.contains("held-out agreement with dense, block 1 → 11"),
            "{out}"
        );
    }
    let with_heads = format!("features.exit_heads={}", p(&heads));
    let (ok, out, err) = adainfer(&[
        "calibrate",
        "--config",
        CONFIG,
        "--task",
        "sst2",
        "--label-scoring",
        "--set",
        &with_heads,
        "--limit",
        "8",
        "--thresholds",
        "0.9,0.0,0.5",
        "--budget",
        "0.9",
        "--confidence",
        "0.5",
        "--out",
        &p(&calibrated),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("left out the 30 sst2 Train prompts"), "{out}");
    let config = adainfer::plugin::PluginConfig::load(&calibrated, &[]).unwrap();
    let record = config.calibration.as_ref().unwrap();
    let trained = adainfer::plugin::exit_heads::ExitHeads::load(&heads).unwrap();
    assert_eq!(
        record.exit_heads.as_deref(),
        Some(trained.fingerprint().as_str())
    );
    assert_eq!(
        config.features.exit_heads.as_deref(),
        Some(heads.canonicalize().unwrap().as_path())
    );
    let eval = [
        "eval",
        "--config",
        &p(&calibrated),
        "--task",
        "sst2",
        "--limit",
        "3",
    ];
    let (ok, out, err) = adainfer(&eval);
    assert!(ok && out.contains("adaptive"), "{err}");
    // Other heads void the certificate; heads for SST-2's labels do not read AG News's.
    let swap = format!("features.exit_heads={}", p(&other));
    let (ok, _, err) = adainfer(&[&eval[..], &["--set", &swap]].concat());
    assert!(!ok && err.contains("calibrated with exit heads"), "{err}");
    let (ok, _, err) = adainfer(&[
        "eval",
        "--config",
        CONFIG,
        "--set",
        &with_heads,
        "--task",
        "agnews",
        "--label-scoring",
        "--limit",
        "2",
    ]);
    assert!(
        !ok && err.contains("score label_tokens") && err.contains("(sst2)"),
        "{err}"
    );
    // Generated text would come from the LM head at a block the heads chose: refused.
    let (ok, _, err) = adainfer(&[
        "generate",
        "--config",
        &p(&calibrated),
        "--mode",
        "early_exit",
        "--prompt",
        "Q: hi\nA:",
        "--max-tokens",
        "2",
    ]);
    assert!(
        !ok && err.contains("exit_heads") && err.contains("generation"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
