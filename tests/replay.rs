//! Calibration judges rules on recorded passes instead of re-running the model; this checks that
//! the replay is exactly what the real hook does, prompt by prompt.

mod common;

use adainfer::eval::ab::{self, Answer};
use adainfer::eval::arms::plugin_arm;
use adainfer::eval::replay;
use adainfer::eval::run::{self, EvalSpec};
use adainfer::eval::sweep::with_threshold;
use adainfer::eval::tasks::Task;
use adainfer::plugin::{load_engine, PluginConfig};

#[test]
fn replayed_exits_equal_the_real_hook() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("plugin-configs/tiny-llama-sst2-agnews-gap_threshold.toml");
    let config = PluginConfig::load(&path, &[]).unwrap();
    let engine = load_engine(&config, None).unwrap();
    for label_scoring in [false, true] {
        let mut spec = EvalSpec::new(Task::Sst2);
        spec.limit = Some(40);
        spec.label_scoring = label_scoring;
        let prepared = run::prepare(&engine, &spec).unwrap();
        let traces = replay::record(&engine, &config, &prepared, || {}).unwrap();
        for (threshold, min_layer) in [(0.5, 1), (0.7, 4), (0.9, 2), (0.3, 9)] {
            let mut rule = with_threshold(&config, threshold).unwrap();
            rule.limits.min_layer = min_layer;
            let replayed = replay::replay(&engine, &rule, &traces, &prepared.cases).unwrap();
            let mut arms = [plugin_arm("adaptive", "gap_threshold", &rule, &engine).unwrap()];
            let real = ab::run_arms(
                &engine,
                &mut arms,
                &prepared.cases,
                &prepared.scoring,
                None,
                || {},
            )
            .unwrap();
            let mut dense = [ab::Arm::dense()];
            let dense = ab::run_arms(
                &engine,
                &mut dense,
                &prepared.cases,
                &prepared.scoring,
                None,
                || {},
            )
            .unwrap();
            let mut exits = 0;
            for (i, (r, o)) in replayed.iter().zip(&real.outcomes[0]).enumerate() {
                let what =
                    format!("θ {threshold} min {min_layer} labels {label_scoring} prompt {i}");
                assert_eq!(r.layers as f64, o.layers, "{what}: layers");
                let Answer::Token(answer) = o.answer else {
                    panic!("{what}: not a token")
                };
                assert_eq!(
                    r.correct,
                    prepared.cases[i].gold == Some(answer),
                    "{what}: correct"
                );
                assert_eq!(
                    r.agrees_with_dense,
                    dense.outcomes[0][i].answer == o.answer,
                    "{what}: agreement"
                );
                exits += usize::from(r.layers < 12);
            }
            assert!(
                exits > 0 || threshold >= 0.9,
                "θ {threshold}: no exits to compare"
            );
        }
    }
}

/// With learned exit heads an exit answers with the head, not the logit lens: the replay (which
/// reads the head's answer from the recorded pass) and the real hook (whose answer the engine
/// hands back with the pass) must still agree prompt by prompt, and on some exits the head's
/// answer must differ from the lens's, or this test would not show which one answered.
#[test]
fn with_exit_heads_an_exit_answers_with_the_head() {
    use adainfer::eval::tasks::Split;
    use adainfer::plugin::config::LogisticTrainParams;
    use adainfer::plugin::exit_heads_fit::{fit, record, HeadsSpec};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("plugin-configs/tiny-llama-sst2-agnews-gap_threshold.toml");
    let config = PluginConfig::load(&path, &[]).unwrap();
    let engine = load_engine(&config, None).unwrap();
    let mut train = EvalSpec::new(Task::Sst2);
    train.split = Split::Train;
    train.limit = Some(60);
    train.label_scoring = true;
    let ab::Scoring::Labels(labels) = run::scoring(&engine, &train).unwrap() else {
        panic!("label scoring")
    };
    let prompts: Vec<(String, Vec<u32>)> = run::prepare(&engine, &train)
        .unwrap()
        .cases
        .iter()
        .map(|c| (c.example.id.clone(), c.tokens.clone()))
        .collect();
    let recorded = record(&engine, &labels, &prompts, || {}).unwrap();
    let spec = HeadsSpec {
        engine: &engine,
        task: "sst2".into(),
        split: "train".into(),
        label_tokens: labels.clone(),
        holdout: 0.2,
        seed: 0,
        params: LogisticTrainParams::default(),
    };
    let heads = fit(&spec, &recorded).unwrap();
    assert_eq!(heads.heads.len(), 11, "one head per block but the last");
    assert_eq!(heads.training.ids.len(), 60);
    let file =
        std::env::temp_dir().join(format!("adainfer-replay-heads-{}.json", std::process::id()));
    heads.save(&file).unwrap();

    let mut with_heads = config.clone().with_task_labels(&labels).unwrap();
    with_heads.features.exit_heads = Some(file.clone());
    let lens_only = config.clone().with_task_labels(&labels).unwrap();
    let mut test = EvalSpec::new(Task::Sst2);
    test.limit = Some(40);
    test.label_scoring = true;
    let prepared = run::prepare(&engine, &test).unwrap();
    let traces = replay::record(&engine, &with_heads, &prepared, || {}).unwrap();
    let lens_traces = replay::record(&engine, &lens_only, &prepared, || {}).unwrap();
    let mut head_differs = 0;
    for (threshold, min_layer) in [(0.3, 1), (0.6, 3), (0.9, 6)] {
        let mut rule = with_threshold(&with_heads, threshold).unwrap();
        rule.limits.min_layer = min_layer;
        let replayed = replay::replay(&engine, &rule, &traces, &prepared.cases).unwrap();
        let mut arms = [plugin_arm("adaptive", "gap_threshold", &rule, &engine).unwrap()];
        let real = ab::run_arms(
            &engine,
            &mut arms,
            &prepared.cases,
            &prepared.scoring,
            None,
            || {},
        )
        .unwrap();
        for (i, (r, o)) in replayed.iter().zip(&real.outcomes[0]).enumerate() {
            let what = format!("θ {threshold} min {min_layer} prompt {i}");
            assert_eq!(r.layers as f64, o.layers, "{what}: layers");
            let Answer::Token(answer) = o.answer else {
                panic!("{what}: not a token")
            };
            assert_eq!(
                answer,
                traces[i].answers[r.layers - 1],
                "{what}: the head's answer"
            );
            assert_eq!(r.correct, prepared.cases[i].gold == Some(answer), "{what}");
            if r.layers < 12 && lens_traces[i].answers[r.layers - 1] != answer {
                head_differs += 1;
            }
        }
    }
    std::fs::remove_file(&file).ok();
    assert!(
        head_differs > 0,
        "no exit where the head and the lens disagree"
    );
}
