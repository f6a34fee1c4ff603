//! Engine behaviour on tiny models the tests build themselves.

use super::model::Outputs;
use super::synthetic::SyntheticSpec;
use crate::hook::{Decision, LayerHook, LayerView, PassInfo, SkipPlan};
use anyhow::Result;
use candle_core::DType;

/// Records which layers it saw; exits after `exit_after` (1-based) and skips `skip`.
#[derive(Default)]
struct Recorder {
    seen: Vec<usize>,
    exit_after: Option<usize>,
    skip: Vec<usize>,
    passes: usize,
}

impl LayerHook for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn begin_pass(&mut self, _: &PassInfo) -> Result<SkipPlan> {
        self.passes += 1;
        Ok(SkipPlan::from_layers(self.skip.clone()))
    }
    fn after_layer(&mut self, view: &mut LayerView<'_>) -> Result<Decision> {
        self.seen.push(view.index);
        Ok(if Some(view.number()) == self.exit_after {
            Decision::Exit
        } else {
            Decision::Continue
        })
    }
}

const PROMPT: [u32; 7] = [49, 26, 258, 3943, 293, 691, 303];

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn hook_sees_every_layer_in_order() {
    let model = SyntheticSpec::tiny(5).build(DType::F32).unwrap();
    let mut rec = Recorder::default();
    let mut cache = model.new_cache();
    let out = model
        .forward(&PROMPT, &mut cache, Some(&mut rec), Outputs::LastToken)
        .unwrap();
    assert_eq!(rec.seen, vec![0, 1, 2, 3, 4]);
    assert_eq!(rec.passes, 1);
    assert_eq!(out.layers_run, 5);
    assert!(out.exit.is_none());
}

/// A hook that answers at its exit: the engine hands the answer back with the pass; an answer
/// left at a layer where nobody exits is dropped.
#[test]
fn an_answer_left_at_the_exit_comes_back_with_the_pass() {
    struct Answering(usize);
    impl LayerHook for Answering {
        fn name(&self) -> &str {
            "answering"
        }
        fn after_layer(&mut self, view: &mut LayerView<'_>) -> Result<Decision> {
            view.answer_with(crate::hook::ExitAnswer {
                ids: vec![3, 4],
                logits: vec![view.number() as f32, 0.0],
            });
            Ok(if view.number() == self.0 {
                Decision::Exit
            } else {
                Decision::Continue
            })
        }
    }
    let model = SyntheticSpec::tiny(5).build(DType::F32).unwrap();
    let out = model
        .forward(
            &PROMPT,
            &mut model.new_cache(),
            Some(&mut Answering(2)),
            Outputs::LastToken,
        )
        .unwrap();
    let exit = out.exit.unwrap();
    assert_eq!(exit.layer, 2);
    assert_eq!(exit.answer.unwrap().logits, vec![2.0, 0.0]);
    let out = model
        .forward(
            &PROMPT,
            &mut model.new_cache(),
            Some(&mut Answering(9)),
            Outputs::LastToken,
        )
        .unwrap();
    assert!(out.exit.is_none() && out.layers_run == 5);
}

#[test]
fn exit_at_k_runs_exactly_k_blocks_and_returns_the_probe_logits() {
    let model = SyntheticSpec::tiny(6).build(DType::F32).unwrap();
    let mut rec = Recorder {
        exit_after: Some(2),
        ..Default::default()
    };
    let mut cache = model.new_cache();
    let out = model
        .forward(&PROMPT, &mut cache, Some(&mut rec), Outputs::LastToken)
        .unwrap();
    assert_eq!(rec.seen, vec![0, 1]);
    assert_eq!(out.layers_run, 2);
    assert_eq!(out.skipped, vec![2, 3, 4, 5]);
    assert_eq!(out.exit.as_ref().unwrap().layer, 2);
    assert_eq!(
        cache.layer_lens(),
        vec![7, 7, 0, 0, 0, 0],
        "skipped layers got no K/V"
    );

    // The exit logits are the logit lens of layer 2, as an observing hook sees it.
    let mut lens = crate::plugin::lens::LogitLens::new(3, false);
    let mut cache = model.new_cache();
    model
        .forward(&PROMPT, &mut cache, Some(&mut lens), Outputs::LastToken)
        .unwrap();
    let exit_probe = crate::hook::Probe::from_logits(None, out.last_logits().unwrap());
    assert_eq!(exit_probe.top1(), lens.layers[1].top_ids[0]);
    assert!((exit_probe.gap() - lens.layers[1].gap).abs() < 1e-5);
}

#[test]
fn skip_plan_leaves_out_exactly_those_blocks() {
    let model = SyntheticSpec::tiny(6).build(DType::F32).unwrap();
    let mut rec = Recorder {
        skip: vec![1, 3, 4],
        ..Default::default()
    };
    let mut cache = model.new_cache();
    let out = model
        .forward(&PROMPT, &mut cache, Some(&mut rec), Outputs::LastToken)
        .unwrap();
    assert_eq!(rec.seen, vec![0, 2, 5]);
    assert_eq!(out.skipped, vec![1, 3, 4]);
    assert_eq!(out.layers_run, 3);
    // A consistent plan keeps decoding possible: skipped layers are never asked for K/V.
    let out2 = model
        .forward(&[7], &mut cache, Some(&mut rec), Outputs::LastToken)
        .unwrap();
    assert_eq!(out2.layers_run, 3);
}

#[test]
fn no_hook_equals_observing_hook() {
    let model = SyntheticSpec::tiny(4).build(DType::F32).unwrap();
    let mut cache = model.new_cache();
    let dense = model
        .forward(&PROMPT, &mut cache, None, Outputs::LastToken)
        .unwrap();
    let mut rec = Recorder::default();
    let mut cache = model.new_cache();
    let hooked = model
        .forward(&PROMPT, &mut cache, Some(&mut rec), Outputs::LastToken)
        .unwrap();
    assert_eq!(dense.last_logits().unwrap(), hooked.last_logits().unwrap());
}

#[test]
fn kv_cache_decode_equals_full_recompute() {
    let model = SyntheticSpec::tiny(3).build(DType::F32).unwrap();
    let mut cache = model.new_cache();
    let mut incremental = Vec::new();
    incremental.push(
        model
            .forward(&PROMPT[..3], &mut cache, None, Outputs::AllTokens)
            .unwrap(),
    );
    for &t in &PROMPT[3..] {
        incremental.push(
            model
                .forward(&[t], &mut cache, None, Outputs::LastToken)
                .unwrap(),
        );
    }
    let mut fresh = model.new_cache();
    let full = model
        .forward(&PROMPT, &mut fresh, None, Outputs::AllTokens)
        .unwrap();
    let full_rows = full.logits.to_vec2::<f32>().unwrap();
    let mut rows = incremental[0].logits.to_vec2::<f32>().unwrap();
    for o in &incremental[1..] {
        rows.push(o.last_logits().unwrap());
    }
    for (i, (a, b)) in rows.iter().zip(&full_rows).enumerate() {
        assert!(
            max_abs_diff(a, b) < 1e-4,
            "position {i} differs by {}",
            max_abs_diff(a, b)
        );
    }
}

#[test]
fn decoding_over_an_exit_hole_is_refused() {
    let model = SyntheticSpec::tiny(4).build(DType::F32).unwrap();
    let mut rec = Recorder {
        exit_after: Some(1),
        ..Default::default()
    };
    let mut cache = model.new_cache();
    model
        .forward(&PROMPT, &mut cache, Some(&mut rec), Outputs::LastToken)
        .unwrap();
    assert_eq!(cache.holes(), vec![1, 2, 3]);
    let err = model
        .forward(&[5], &mut cache, None, Outputs::LastToken)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("KV cache hole") && err.contains("layer 2"),
        "{err}"
    );
}

#[test]
fn bad_tokens_and_lengths_are_errors() {
    let model = SyntheticSpec::tiny(2).build(DType::F32).unwrap();
    let mut cache = model.new_cache();
    let e = model
        .forward(&[5000], &mut cache, None, Outputs::LastToken)
        .unwrap_err()
        .to_string();
    assert!(e.contains("5000"), "{e}");
    // Requests are refused before any compute, naming the id.
    let e = crate::engine::generate::check_request(&model, &[7, 5000], 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("5000") && e.contains("vocabulary"), "{e}");
    let e = model
        .forward(&[], &mut cache, None, Outputs::LastToken)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least one token"), "{e}");
    let long = vec![1u32; 300];
    let e = model
        .forward(&long, &mut cache, None, Outputs::LastToken)
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_position_embeddings"), "{e}");
}

#[test]
fn sliding_window_masks_old_positions() {
    let mut spec = SyntheticSpec::tiny(2);
    spec.model_type = "mistral";
    let mut config = spec.config_json();
    config["sliding_window"] = serde_json::json!(3);
    let config = super::ModelConfig::from_json(&config.to_string()).unwrap();
    assert_eq!(config.sliding_window, Some(3));
    let tensors = spec.tensors().unwrap().into_iter().collect();
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &candle_core::Device::Cpu);
    let windowed = super::DecoderModel::load(vb, config).unwrap();
    let full = spec.build(DType::F32).unwrap();
    // Within the window both agree; past it they differ.
    let (mut c1, mut c2) = (windowed.new_cache(), full.new_cache());
    let a = windowed
        .forward(&PROMPT[..3], &mut c1, None, Outputs::LastToken)
        .unwrap();
    let b = full
        .forward(&PROMPT[..3], &mut c2, None, Outputs::LastToken)
        .unwrap();
    assert!(max_abs_diff(&a.last_logits().unwrap(), &b.last_logits().unwrap()) < 1e-5);
    let (mut c1, mut c2) = (windowed.new_cache(), full.new_cache());
    let a = windowed
        .forward(&PROMPT, &mut c1, None, Outputs::LastToken)
        .unwrap();
    let b = full
        .forward(&PROMPT, &mut c2, None, Outputs::LastToken)
        .unwrap();
    assert!(max_abs_diff(&a.last_logits().unwrap(), &b.last_logits().unwrap()) > 1e-4);
}
