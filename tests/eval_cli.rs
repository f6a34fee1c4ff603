//! `adainfer eval` end to end on the vendored task model: the JSON shape and the invariants
//! between arms that hold whatever the model's numbers are.

mod common;

use serde_json::Value;

fn eval_json(args: &[&str]) -> Value {
    let model = common::task_model();
    let mut all = vec!["--model", model.to_str().unwrap()];
    all.extend_from_slice(args);
    eval_json_with(&all)
}

fn eval_json_with(args: &[&str]) -> Value {
    let mut all = vec!["eval", "--format", "json"];
    all.extend_from_slice(args);
    common::run_json(&all)
}

/// Run `adainfer args`, which must fail; its stderr.
fn refused(args: &[&str]) -> String {
    let (ok, out, err) = common::adainfer(args);
    assert!(!ok, "adainfer {args:?} should have failed: {out}");
    err
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

#[test]
fn json_has_the_documented_shape_and_arm_invariants() {
    let doc = eval_json(&["--task", "sst2", "--limit", "12", "--arms", "dense,oracle"]);
    assert_eq!(doc["task"], "sst2");
    assert_eq!(doc["examples"], 12);
    let dense = &doc["arms"]["dense"];
    let oracle = &doc["arms"]["oracle"];
    for arm in [dense, oracle] {
        for key in [
            "accuracy",
            "avg_layers",
            "layers_variance",
            "pruning_ratio",
            "flops_ratio",
            "agreement_with_dense",
        ] {
            let x = num(arm, key);
            assert!(x.is_finite() && x >= 0.0, "{key} = {x}");
        }
        assert!(arm.get("wall_s").is_some() && arm.get("speedup").is_some());
        let hist: u64 = arm["layers_histogram"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .sum();
        assert_eq!(hist, 12);
    }
    assert_eq!(num(dense, "avg_layers"), 12.0);
    assert_eq!(num(dense, "pruning_ratio"), 0.0);
    assert_eq!(num(dense, "flops_ratio"), 1.0);
    assert_eq!(num(dense, "speedup"), 1.0);
    assert!(num(dense, "wall_s") > 0.0);
    // The oracle answers with the final layer by definition, and skips what it can.
    assert_eq!(num(oracle, "agreement_with_dense"), 1.0);
    assert_eq!(num(oracle, "accuracy"), num(dense, "accuracy"));
    let avg = num(oracle, "avg_layers");
    assert!((num(oracle, "pruning_ratio") - (1.0 - avg / 12.0)).abs() < 1e-12);
    assert!(num(oracle, "flops_ratio") < 1.0 || avg == 12.0);
    assert!(oracle["wall_s"].is_null());
    let by_layer = doc["accuracy_by_layer"].as_array().unwrap();
    assert_eq!(by_layer.len(), 12);
    assert_eq!(by_layer[11].as_f64().unwrap(), num(dense, "accuracy"));
}

#[test]
fn label_scoring_never_loses_to_full_vocab_and_few_shot_runs() {
    let args = [
        "--task", "agnews", "--limit", "8", "--shots", "2", "--arms", "dense",
    ];
    let full = eval_json(&args);
    let mut with_labels = args.to_vec();
    with_labels.push("--label-scoring");
    let labels = eval_json(&with_labels);
    assert_eq!(full["shots"], 2);
    assert_eq!(labels["scoring"], "label_tokens");
    // A correct full-vocabulary top-1 is a label token, so it stays top-1 among the labels.
    assert!(num(&labels["arms"]["dense"], "accuracy") >= num(&full["arms"]["dense"], "accuracy"));
}

#[test]
fn bad_arguments_are_named() {
    let model = common::task_model();
    let err = refused(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--task",
        "sst2",
        "--arms",
        "dense,bogus",
    ]);
    assert!(err.contains("bogus"), "{err}");
}

#[test]
fn plugin_arms_from_a_config() {
    let config = format!(
        "{}/plugin-configs/tiny-llama-sst2-agnews-gap_threshold.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let doc = eval_json_with(&[
        "--config",
        &config,
        "--task",
        "sst2",
        "--limit",
        "10",
        "--arms",
        "dense,adaptive,unified_skip",
        "--set",
        "policy.threshold=0.0",
    ]);
    let adaptive = &doc["arms"]["adaptive"];
    // θ = 0 exits at the first layer the guards allow (min_layer = 1): every prompt, layer 1.
    assert_eq!(num(adaptive, "avg_layers"), 1.0);
    assert_eq!(adaptive["early_exits"], 10);
    assert_eq!(adaptive["layers_histogram"][0], 10);
    assert!(num(adaptive, "flops_ratio") < 1.0);
    // A static skip runs the same number of layers on every prompt.
    let skip = &doc["arms"]["unified_skip"];
    assert_eq!(num(skip, "layers_variance"), 0.0);
    assert!(num(skip, "avg_layers") < 12.0);
    assert_eq!(skip["early_exits"], 0);
}

fn gap_config() -> String {
    format!(
        "{}/plugin-configs/tiny-llama-sst2-agnews-gap_threshold.toml",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn calibrate_writes_a_certified_config_that_loads_back_and_guards_its_model() {
    let out_path = std::env::temp_dir().join(format!("adainfer-cal-{}.toml", std::process::id()));
    // A loose budget (ε = 0.9, δ = 0.5) that 8 prompts can certify: the walk goes from the
    // highest threshold down and the chosen one is written with its record.
    let (ok, stdout, err) = common::adainfer(&[
        "calibrate",
        "--config",
        &gap_config(),
        "--task",
        "sst2",
        "--limit",
        "8",
        "--thresholds",
        "0.9,0.0,0.5",
        "--budget",
        "0.9",
        "--confidence",
        "0.5",
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("**chosen**"), "{stdout}");
    let written = std::fs::read_to_string(&out_path).unwrap();
    let config = adainfer::plugin::PluginConfig::load(&out_path, &[]).unwrap();
    assert_eq!(config.policy.kind, "gap_threshold");
    assert!(config.model.path.is_absolute(), "{written}");
    let record = config.calibration.as_ref().expect("a calibration record");
    assert_eq!(
        (record.prompts, record.epsilon, record.task.as_str()),
        (8, 0.9, "sst2")
    );
    assert!(record.p_value <= 0.5, "{written}");
    assert_eq!(record.model.num_layers, 12);
    // It runs from anywhere: the eval reads the written file.
    let doc = eval_json_with(&[
        "--config",
        out_path.to_str().unwrap(),
        "--task",
        "sst2",
        "--limit",
        "3",
    ]);
    assert!(num(&doc["arms"]["adaptive"], "avg_layers") <= 12.0);
    // With another model, or another feature set, the guarantee is void: refused, naming why.
    let other = common::shared().join("reference/random-llama");
    let err = refused(&[
        "eval",
        "--config",
        out_path.to_str().unwrap(),
        "--model",
        other.to_str().unwrap(),
        "--task",
        "sst2",
        "--limit",
        "2",
    ]);
    assert!(
        err.contains("calibrated for another model") && err.contains("num_layers"),
        "{err}"
    );
    let err = refused(&[
        "eval",
        "--config",
        out_path.to_str().unwrap(),
        "--set",
        "features.names=[\"gap\"]",
        "--task",
        "sst2",
        "--limit",
        "2",
    ]);
    assert!(err.contains("calibrated with features"), "{err}");
    // Two parameters (threshold × minimum exit layer): the front is picked on half of the
    // prompts and tested on the other half.
    let (ok, stdout, err) = common::adainfer(&[
        "calibrate",
        "--config",
        &gap_config(),
        "--task",
        "sst2",
        "--limit",
        "10",
        "--thresholds",
        "0.9,0.5",
        "--min-layers",
        "1,6",
        "--budget",
        "0.9",
        "--confidence",
        "0.5",
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("over 4 rules ordered on 5 prompts, tested on the other 5"),
        "{stdout}"
    );
    let config = adainfer::plugin::PluginConfig::load(&out_path, &[]).unwrap();
    assert!([1, 6].contains(&config.limits.min_layer));
    assert_eq!(config.calibration.unwrap().prompts, 5);
    std::fs::remove_file(&out_path).unwrap();
}

/// The lines of the rule table `calibrate` prints (what a replay decided, rule by rule).
fn rule_table(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("| threshold |"))
        .take_while(|l| l.starts_with('|'))
        .collect()
}

#[test]
fn calibrate_reuses_recorded_passes_and_reports_every_budget_on_unseen_prompts() {
    let dir = std::env::temp_dir().join(format!("adainfer-cal-traces-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (traces, check, plot, out) = (
        path("t.json"),
        path("c.json"),
        path("p.svg"),
        path("o.toml"),
    );
    let base = [
        "calibrate",
        "--config",
        &gap_config(),
        "--task",
        "sst2",
        "--limit",
        "8",
        "--thresholds",
        "0.9,0.5,0.0",
        "--budget",
        "0.9",
        "--confidence",
        "0.5",
        "--traces",
        &traces,
        "--out",
        &out,
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let run = |args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::adainfer(&args)
    };
    // First run: records with more features than the policy reads, and sweeps the budget.
    let (ok, first, err) = run(&with(&[
        "--set",
        "features.names=[\"gap\", \"top_prob\", \"entropy\"]",
        "--sweep-budgets",
        "0.01,0.5,0.95",
        "--check-limit",
        "4",
        "--check-traces",
        &check,
        "--plot",
        &plot,
    ]));
    assert!(ok, "{err}");
    assert!(
        first.contains("recorded 8 passes into") && first.contains("recorded 4 passes into"),
        "{first}"
    );
    assert!(first.contains("The rule each budget certifies"), "{first}");
    // ε = 1% cannot be certified on 8 prompts: the answer is dense, said as such.
    assert!(
        first.contains("| 1.0% | none certified: dense | – | – | 0.0% |"),
        "{first}"
    );
    for eps in ["| 50.0% |", "| 90.0% |", "| 95.0% |"] {
        assert!(first.contains(eps), "{eps} missing: {first}");
    }
    // Dense on the check prompts runs every block; the oracle always agrees with it.
    let row = |name: &str| {
        first
            .lines()
            .find(|l| l.starts_with(&format!("| – | {name} |")))
            .unwrap_or_else(|| panic!("no {name} row: {first}"))
            .to_string()
    };
    assert!(
        row("dense").contains("| 100.0% | 12.00 | 0.0% |"),
        "{}",
        row("dense")
    );
    assert!(row("oracle").contains("| 100.0% |"), "{}", row("oracle"));
    assert!(std::fs::read_to_string(&plot).unwrap().starts_with("<svg"));
    // Second run: the policy's own two features are read from the file, and every rule is
    // judged exactly as on the recorded passes.
    let (ok, second, err) = run(&with(&[]));
    assert!(ok, "{err}");
    assert!(second.contains("read 8 recorded passes from"), "{second}");
    assert!(!second.contains("recorded 8 passes"), "{second}");
    assert_eq!(rule_table(&first), rule_table(&second));
    assert!(rule_table(&first).len() >= 5);
    // Passes recorded on other prompts, or without a feature the rule reads, are refused.
    let err = refused(
        &with(&["--shots", "1"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(
        err.contains("prompt 1 was") && err.contains("record again"),
        "{err}"
    );
    let mut fewer = with(&[]);
    fewer[6] = "7".into();
    let err = refused(&fewer.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("holds 8 prompts, this run has 7"), "{err}");
    let args = with(&["--set", "features.names=[\"gap\", \"cos_mlp\"]"]);
    let err = refused(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("has no feature \"cos_mlp\""), "{err}");
    std::fs::write(&check, b"{\"format\": 1, \"identity\": 7}").unwrap();
    let mut other = with(&[]);
    other[14] = check.clone();
    let err = refused(&other.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("not a traces file"), "{err}");
    let args = with(&["--split", "test", "--check-limit", "4"]);
    let err = refused(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("--split train"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn calibrate_fits_per_layer_thresholds_and_adopts_the_task_labels() {
    let out_path =
        std::env::temp_dir().join(format!("adainfer-cal-pl-{}.toml", std::process::id()));
    // Only per-layer rules can win here: the one global rule (θ = 1.0 from block 12) never exits.
    let (ok, stdout, err) = common::adainfer(&[
        "calibrate",
        "--config",
        &gap_config(),
        "--task",
        "sst2",
        "--label-scoring",
        "--limit",
        "40",
        "--thresholds",
        "1.0",
        "--min-layers",
        "12",
        "--per-layer-risks",
        "0.01,0.2,0.5",
        "--budget",
        "0.9",
        "--confidence",
        "0.5",
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    // The adoption is a note on stderr (stdout may be a JSON report).
    assert!(
        err.contains("features over the task's label tokens"),
        "{err}"
    );
    assert!(stdout.contains("| per layer, risk 0.5 ("), "{stdout}");
    // 20 selection prompts cannot show a 1% risk at any block: that rule would be dense, and an
    // empty list must not turn into "exit anywhere at the config's threshold".
    assert!(
        stdout.contains("per-layer risk 0.01: no block meets it"),
        "{stdout}"
    );
    assert!(
        stdout.contains("over 3 rules ordered on 20 prompts"),
        "{stdout}"
    );
    let config = adainfer::plugin::PluginConfig::load(&out_path, &[]).unwrap();
    let per_layer = &config.policy.gap_threshold.per_layer;
    assert!(
        !per_layer.is_empty(),
        "a per-layer rule was chosen: {stdout}"
    );
    assert!(per_layer.iter().all(|t| (1..12).contains(&t.layer)));
    assert_eq!(config.limits.min_layer, 1);
    assert!(config.features.label_tokens.is_some());
    // The written rule runs, and exits early somewhere.
    let doc = eval_json_with(&[
        "--config",
        out_path.to_str().unwrap(),
        "--task",
        "sst2",
        "--limit",
        "20",
    ]);
    assert!(num(&doc["arms"]["adaptive"], "avg_layers") < 12.0, "{doc}");
    std::fs::remove_file(&out_path).unwrap();
    // A config whose label tokens are another task's is refused, naming both.
    let err = refused(&[
        "calibrate",
        "--config",
        &gap_config(),
        "--task",
        "sst2",
        "--label-scoring",
        "--set",
        "features.label_tokens=[1,2]",
        "--limit",
        "40",
        "--budget",
        "0.9",
        "--confidence",
        "0.5",
    ]);
    assert!(err.contains("label_tokens = [1, 2]"), "{err}");
}

#[test]
fn calibrate_says_when_the_prompts_cannot_certify_the_budget() {
    // ε = 1 %, δ = 0.1: even a rule that never disagrees needs 230 prompts.
    let err = refused(&[
        "calibrate",
        "--config",
        &gap_config(),
        "--task",
        "sst2",
        "--limit",
        "50",
    ]);
    assert!(
        err.contains("230") && err.contains("cannot certify"),
        "{err}"
    );
}

#[test]
fn calibrate_refuses_a_static_policy() {
    let err = refused(&[
        "calibrate",
        "--config",
        &gap_config(),
        "--task",
        "sst2",
        "--set",
        "policy.kind=unified_skip",
    ]);
    assert!(
        err.contains("unified_skip") && err.contains("threshold"),
        "{err}"
    );
}

#[test]
fn plots_are_written_as_svg() {
    let dir = std::env::temp_dir().join(format!("adainfer-plots-{}", std::process::id()));
    let (ok, table, err) = common::adainfer(&[
        "eval",
        "--config",
        &gap_config(),
        "--task",
        "sst2",
        "--limit",
        "6",
        "--arms",
        "adaptive",
        "--sweep-thresholds",
        "0.5,0.9",
        "--plots",
        dir.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    // --plots adds the dense and oracle arms it draws from.
    assert!(
        table.contains("| dense |") && table.contains("| oracle |"),
        "{table}"
    );
    for name in [
        "accuracy_by_layer",
        "trajectories",
        "layers_histogram",
        "accuracy_vs_pruning",
    ] {
        let svg = std::fs::read_to_string(dir.join(format!("{name}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{name}"
        );
    }
    let curve = std::fs::read_to_string(dir.join("accuracy_vs_pruning.svg")).unwrap();
    assert!(curve.contains("gap_threshold as the threshold sweeps"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The instruct model prompted as users prompt it: its chat template, an instruction, the
/// demonstrations as earlier turns; the report says the format and whether dense is competent.
#[test]
fn chat_form_prompts_run_on_the_real_model_and_the_report_judges_competence() {
    let model =
        common::shared().join("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    let doc = eval_json_with(&[
        "--model",
        model.to_str().unwrap(),
        "--task",
        "sst2",
        "--shots",
        "2",
        "--prompt-format",
        "chat",
        "--label-scoring",
        "--limit",
        "4",
    ]);
    assert_eq!(doc["prompt_format"], "chat");
    let competence = &doc["competence"];
    assert!(competence["chance"].as_f64().unwrap() == 0.5, "{doc}");
    let (lo, hi) = (num(competence, "ci_low"), num(competence, "ci_high"));
    assert!(lo <= num(competence, "accuracy") && num(competence, "accuracy") <= hi);
    // Four prompts cannot show competence.
    assert_eq!(competence["competent"], false);
}
