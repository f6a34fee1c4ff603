//! collect → train → save → load → run, on the vendored task model and SST-2 train prompts.

mod common;

use adainfer::engine::Outputs;
use adainfer::eval::tasks::{answer_text, load_examples, prompt, Split, Task};
use adainfer::plugin::classifier::Classifier;
use adainfer::plugin::config::TrainSection;
use adainfer::plugin::features::FeatureExtractor;
use adainfer::plugin::training::{
    collect_rows, read_data, train, write_data, CollectPrompt, DataHeader,
};
use adainfer::plugin::{load_engine, AdaInfer, PluginConfig};
use adainfer::{Engine, LoadOptions};
use std::path::{Path, PathBuf};

fn config(sets: &[String]) -> PluginConfig {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("plugin-configs/tiny-llama-sst2-agnews-gap_threshold.toml");
    PluginConfig::load(&path, sets).unwrap()
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("adainfer-{}-{name}", std::process::id()))
}

fn prompts(engine: &Engine, n: usize) -> Vec<CollectPrompt> {
    load_examples(Task::Sst2, Split::Train, Some(n))
        .unwrap()
        .iter()
        .map(|e| CollectPrompt {
            id: e.id.clone(),
            text: prompt(e),
            gold_token: engine
                .tokenizer
                .encode(answer_text(&e.label_word).as_str(), false)
                .unwrap()
                .get_ids()
                .first()
                .copied(),
        })
        .collect()
}

fn collect(
    engine: &Engine,
    gold: bool,
) -> (DataHeader, Vec<adainfer::plugin::training::TrainingRow>) {
    let c = config(&[]);
    let features = FeatureExtractor::new(&c.features.names, None).unwrap();
    let rows = collect_rows(engine, features, &prompts(engine, 60), gold).unwrap();
    let header = DataHeader {
        identity: engine.identity.clone(),
        features: c.features.names.clone(),
        label: if gold { "gold" } else { "final" }.into(),
        label_tokens: None,
        task: "sst2".into(),
        split: "train".into(),
    };
    (header, rows)
}

#[test]
fn classifiers_reproduce_their_predictions_after_save_and_load() {
    let engine = load_engine(&config(&[]), None).unwrap();
    let (header, rows) = collect(&engine, false);
    assert_eq!(rows.len(), 60 * 12);
    // Final-layer rows are label 1 by definition.
    assert!(rows.iter().filter(|r| r.layer == 12).all(|r| r.label == 1));
    assert!(rows.iter().any(|r| r.label == 0));
    let data = temp("rows.jsonl");
    write_data(&data, &header, &rows).unwrap();
    let (header_back, rows_back) = read_data(&data).unwrap();
    assert_eq!((&header_back, &rows_back), (&header, &rows));

    let params = TrainSection {
        holdout: 0.25,
        ..TrainSection::default()
    };
    for kind in ["svm", "logistic"] {
        let (classifier, report) = train(&header, &rows, kind, &params, "rows").unwrap();
        assert_eq!(report.holdout_prompts, 15);
        assert!((0.0..=1.0).contains(&report.summary.precision));
        // The sweep agrees with the summary at the default threshold, and a stricter threshold
        // never exits more often.
        let default = report
            .sweep
            .iter()
            .find(|p| p.threshold == classifier.default_threshold())
            .unwrap();
        assert_eq!(default.exit_rate, report.summary.exit_rate);
        assert!(report
            .sweep
            .windows(2)
            .all(|w| w[1].exit_rate <= w[0].exit_rate));
        let path = temp(&format!("{kind}.json"));
        classifier.save(&path).unwrap();
        let loaded = Classifier::load(&path).unwrap();
        let before: Vec<bool> = rows
            .iter()
            .map(|r| classifier.predict(&r.features))
            .collect();
        let after: Vec<bool> = rows.iter().map(|r| loaded.predict(&r.features)).collect();
        assert_eq!(before, after, "{kind}");
        assert!(
            before.iter().any(|&p| p) && before.iter().any(|&p| !p),
            "{kind}"
        );

        // The policy runs from a config that points at the file.
        let c = config(&[
            format!("policy.kind={kind}"),
            format!("policy.classifier={}", path.display()),
        ]);
        let mut hook = AdaInfer::from_config(&c, &engine).unwrap();
        assert_eq!(hook.policy_name(), kind);
        let ids = engine
            .encode("Q: a gripping , funny and moving film .\nA:")
            .unwrap();
        let mut cache = engine.model.new_cache();
        engine
            .model
            .forward(&ids, &mut cache, Some(&mut hook), Outputs::LastToken)
            .unwrap();
        assert_eq!(hook.stats().passes, 1);

        // Another feature list is refused, naming the field.
        let mut sets = vec![
            format!("policy.kind={kind}"),
            format!("policy.classifier={}", path.display()),
        ];
        sets.push("features.names=[\"gap\"]".into());
        let err = AdaInfer::from_config(&config(&sets), &engine)
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("features"), "{err:#}");
        std::fs::remove_file(&path).ok();
    }
    std::fs::remove_file(&data).ok();
}

/// The CRF reads a pass's layers as a sequence: its scores survive save / load along every
/// prompt, its policy exits where the sequence scores first cross the threshold, and every pass
/// starts its filter afresh (the same prompt twice exits at the same block).
#[test]
fn the_crf_scores_layers_as_a_sequence_and_restarts_every_pass() {
    let engine = load_engine(&config(&[]), None).unwrap();
    let (header, rows) = collect(&engine, false);
    let (crf, report) = train(&header, &rows, "crf", &TrainSection::default(), "rows").unwrap();
    assert_eq!(crf.kind(), "crf");
    assert_eq!(
        report.summary.train_rows, report.available_rows,
        "no balancing"
    );
    let path = temp("crf.json");
    crf.save(&path).unwrap();
    let loaded = Classifier::load(&path).unwrap();
    let along = |c: &Classifier, prompt: &str| -> Vec<f64> {
        let mut state = None;
        let mut mine: Vec<_> = rows.iter().filter(|r| r.prompt == prompt).collect();
        mine.sort_by_key(|r| r.layer);
        mine.iter()
            .map(|r| c.score_step(&mut state, &r.features))
            .collect()
    };
    let first = rows[0].prompt.clone();
    let scores = along(&crf, &first);
    assert_eq!(scores, along(&loaded, &first));
    // The filter carries history: a layer scored alone differs from the same layer in sequence.
    let layer_5 = rows
        .iter()
        .find(|r| r.prompt == first && r.layer == 5)
        .unwrap();
    assert_ne!(crf.score(&layer_5.features), scores[4]);

    let threshold = 0.9;
    let c = config(&[
        "policy.kind=crf".into(),
        format!("policy.classifier={}", path.display()),
        format!("policy.threshold={threshold}"),
    ]);
    let mut hook = AdaInfer::from_config(&c, &engine).unwrap();
    assert_eq!(hook.policy_name(), "crf");
    let text = "Q: a gripping , funny and moving film .\nA:";
    let ids = engine.encode(text).unwrap();
    let mut exits = Vec::new();
    for _ in 0..2 {
        let mut cache = engine.model.new_cache();
        let pass = engine
            .model
            .forward(&ids, &mut cache, Some(&mut hook), Outputs::LastToken)
            .unwrap();
        exits.push(pass.exit.map(|e| e.layer));
    }
    assert!(matches!(exits[0], Some(layer) if layer < 12), "{exits:?}");
    assert_eq!(
        exits[0], exits[1],
        "the second pass must not inherit the first's filter"
    );
    std::fs::remove_file(&path).ok();
}

#[test]
fn classifier_for_another_model_is_refused_naming_the_field() {
    let engine = load_engine(&config(&[]), None).unwrap();
    let (header, rows) = collect(&engine, true);
    // Gold labels differ from final ones where the model is wrong.
    let (_, final_rows) = collect(&engine, false);
    assert_ne!(
        rows.iter().map(|r| r.label).collect::<Vec<_>>(),
        final_rows.iter().map(|r| r.label).collect::<Vec<_>>()
    );
    let (classifier, _) =
        train(&header, &rows, "logistic", &TrainSection::default(), "rows").unwrap();
    let path = temp("other.json");
    classifier.save(&path).unwrap();
    let sets = vec![
        "policy.kind=logistic".to_string(),
        format!("policy.classifier={}", path.display()),
    ];
    let reference = Engine::load(
        &common::shared().join("reference/random-llama"),
        &LoadOptions::default(),
    )
    .unwrap();
    let err = AdaInfer::from_config(&config(&sets), &reference)
        .err()
        .unwrap();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("num_layers") && msg.contains(&path.display().to_string()),
        "{msg}"
    );

    let mut tampered = classifier.clone();
    tampered.identity.weights_fingerprint = "0000".into();
    tampered.save(&path).unwrap();
    let err = AdaInfer::from_config(&config(&sets), &engine)
        .err()
        .unwrap();
    assert!(
        format!("{err:#}").contains("weights_fingerprint"),
        "{err:#}"
    );
    std::fs::remove_file(Path::new(&path)).ok();
}
