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
