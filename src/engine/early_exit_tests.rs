//! KV fill strategies against references recomputed from scratch, on a self-built tiny model
//! and on every family's shared reference model (sliding windows, learned positions, parallel
//! blocks all meet the backlog here).

use super::early_exit::{generate_early_exit, FixedExit};
use super::generate::{generate_dense, GenerationParams};
use super::kv_cache::KvCache;
use super::kv_fill::{flush, step, Backlog, KvFill};
use super::model::{DecoderModel, Outputs};
use super::sampling::argmax;
use super::synthetic::SyntheticSpec;
use crate::hook::{Decision, LayerHook, LayerView, PassInfo, SkipPlan};
use anyhow::Result;
use candle_core::DType;

const PROMPT: [u32; 7] = [49, 26, 258, 3943, 293, 691, 303];
const DECODE: [u32; 9] = [17, 905, 3, 2222, 64, 1000, 7, 311, 48];

/// Pass i exits after block `script[i]` (1-based; `None` runs every block).
struct ScriptedExit {
    script: Vec<Option<usize>>,
    pass: usize,
    skip: Vec<usize>,
}

impl ScriptedExit {
    fn new(script: &[Option<usize>]) -> Self {
        Self {
            script: script.to_vec(),
            pass: 0,
            skip: Vec::new(),
        }
    }
}

impl LayerHook for ScriptedExit {
    fn name(&self) -> &str {
        "scripted"
    }
    fn begin_pass(&mut self, _: &PassInfo) -> Result<SkipPlan> {
        self.pass += 1;
        Ok(SkipPlan::from_layers(self.skip.clone()))
    }
    fn after_layer(&mut self, view: &mut LayerView<'_>) -> Result<Decision> {
        let exit = self.script.get(self.pass - 1).copied().flatten();
        Ok(if Some(view.number()) == exit {
            Decision::Exit
        } else {
            Decision::Continue
        })
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn dense_cache(model: &DecoderModel, tokens: &[u32]) -> KvCache {
    let mut cache = model.new_cache();
    model
        .forward(tokens, &mut cache, None, Outputs::LastToken)
        .unwrap();
    cache
}

/// Largest K/V difference at block `index` over positions `0..len`.
fn layer_diff(a: &KvCache, b: &KvCache, index: usize) -> f32 {
    let (ka, va) = a.layer(index).get().unwrap().unwrap();
    let (kb, vb) = b.layer(index).get().unwrap().unwrap();
    let flat = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    max_abs_diff(&flat(&ka), &flat(&kb)).max(max_abs_diff(&flat(&va), &flat(&vb)))
}

/// From scratch: a fresh dense pass over `tokens` stopped after block `layer`.
fn reference_exit_logits(model: &DecoderModel, tokens: &[u32], layer: usize) -> Vec<f32> {
    let mut hook = FixedExit::new(layer, model.num_layers()).unwrap();
    let mut cache = model.new_cache();
    model
        .forward(tokens, &mut cache, Some(&mut hook), Outputs::LastToken)
        .unwrap()
        .last_logits()
        .unwrap()
}

/// Feed PROMPT then DECODE one token at a time under `script`; returns the cache, the
/// backlog and each pass's (logits, depth).
fn run_script(
    model: &DecoderModel,
    script: &[Option<usize>],
    fill: KvFill,
) -> (KvCache, Backlog, Vec<(Vec<f32>, usize)>) {
    let mut hook = ScriptedExit::new(script);
    let mut cache = model.new_cache();
    let mut backlog = Backlog::default();
    let mut outs = Vec::new();
    let passes = std::iter::once(&PROMPT[..]).chain(DECODE.chunks(1));
    for tokens in passes.take(script.len()) {
        let out = step(
            model,
            tokens,
            &mut cache,
            &mut backlog,
            Some(&mut hook),
            fill,
        )
        .unwrap();
        if fill == KvFill::Propagate {
            assert!(cache.holes().is_empty(), "propagate leaves no hole");
        }
        outs.push((out.logits, out.depth));
    }
    (cache, backlog, outs)
}

/// Deep, shallow, full-depth and repeated exits: groups of several depths wait at once.
const SCRIPT: [Option<usize>; 10] = [
    Some(4),
    Some(2),
    Some(5),
    None,
    Some(1),
    Some(3),
    Some(3),
    Some(5),
    Some(1),
    Some(6),
];

/// Six-block models: the synthetic Llama and each family's reference model (f32).
fn six_block_models() -> Vec<(String, DecoderModel)> {
    let mut models = vec![(
        "synthetic".to_string(),
        SyntheticSpec::tiny(6).build(DType::F32).unwrap(),
    )];
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference");
    for name in [
        "random-mistral",
        "random-gemma3",
        "random-opt",
        "random-gptj",
    ] {
        let engine = crate::Engine::load(&shared.join(name), &Default::default()).unwrap();
        assert_eq!(engine.model.num_layers(), 6, "{name}");
        models.push((name.to_string(), engine.model));
    }
    models
}

#[test]
fn recompute_logits_equal_a_fresh_pass_exited_at_the_same_block() {
    for (name, model) in six_block_models() {
        let (_, _, outs) = run_script(&model, &SCRIPT, KvFill::Recompute);
        let all: Vec<u32> = PROMPT.iter().chain(&DECODE).copied().collect();
        for (i, (logits, depth)) in outs.iter().enumerate() {
            assert_eq!(*depth, SCRIPT[i].unwrap_or(6), "{name} pass {i} depth");
            let reference = reference_exit_logits(&model, &all[..PROMPT.len() + i], *depth);
            let d = max_abs_diff(logits, &reference);
            let scale = reference.iter().fold(1f32, |m, x| m.max(x.abs()));
            assert!(
                d < 1e-4 * scale,
                "{name} pass {i} (exit {depth}) differs by {d}"
            );
        }
    }
}

#[test]
fn recompute_cache_equals_the_dense_cache_once_flushed() {
    for (name, model) in six_block_models() {
        // Stop before the last (full-depth) pass so positions are still waiting.
        let script = &SCRIPT[..SCRIPT.len() - 1];
        let (mut cache, mut backlog, _) = run_script(&model, script, KvFill::Recompute);
        assert!(!backlog.is_empty() && !cache.holes().is_empty());
        let done = flush(&model, &mut cache, &mut backlog).unwrap().unwrap();
        assert!(backlog.is_empty() && cache.holes().is_empty());
        let all: Vec<u32> = PROMPT
            .iter()
            .chain(&DECODE[..script.len() - 1])
            .copied()
            .collect();
        assert_eq!(done.first_position + done.hidden.dim(1).unwrap(), all.len());
        let dense = dense_cache(&model, &all);
        for index in 0..6 {
            let d = layer_diff(&cache, &dense, index);
            assert!(d < 1e-4, "{name} layer {} differs by {d}", index + 1);
        }
    }
}

#[test]
fn propagate_keeps_the_cache_whole_but_is_approximate() {
    let model = SyntheticSpec::tiny(6).build(DType::F32).unwrap();
    // The prompt runs densely, so the first exiting token sees an exact cache.
    let mut script = SCRIPT;
    script[0] = None;
    let (cache, _, outs) = run_script(&model, &script, KvFill::Propagate);
    let all: Vec<u32> = PROMPT.iter().chain(&DECODE).copied().collect();
    let first = reference_exit_logits(&model, &all[..PROMPT.len() + 1], 2);
    assert!(max_abs_diff(&outs[1].0, &first) < 1e-4);
    let dense = dense_cache(&model, &all[..cache.seq_len()]);
    // Block 1 runs for every token (the shallowest exit is 1), so it stays exact; deeper
    // blocks hold the copied states' projections instead of the dense entries.
    assert!(layer_diff(&cache, &dense, 0) < 1e-4);
    assert!(layer_diff(&cache, &dense, 5) > 1e-3);
}

#[test]
fn propagate_fills_planned_skips_and_recompute_refuses_them() {
    let model = SyntheticSpec::tiny(4).build(DType::F32).unwrap();
    let mut hook = ScriptedExit::new(&[None, None]);
    hook.skip = vec![1];
    let (mut cache, mut backlog) = (model.new_cache(), Backlog::default());
    for tokens in [&PROMPT[..], &DECODE[..1]] {
        let out = step(
            &model,
            tokens,
            &mut cache,
            &mut backlog,
            Some(&mut hook),
            KvFill::Propagate,
        )
        .unwrap();
        assert_eq!(out.depth, 3, "4 blocks, block 2 skipped by plan");
    }
    assert!(cache.holes().is_empty());
    let (mut cache, mut backlog) = (model.new_cache(), Backlog::default());
    let err = step(
        &model,
        &PROMPT,
        &mut cache,
        &mut backlog,
        Some(&mut hook),
        KvFill::Recompute,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("kv_fill = recompute") && err.contains("[2]"),
        "{err}"
    );
}

#[test]
fn recompute_generation_with_a_fixed_exit_matches_fresh_exited_passes() {
    let model = SyntheticSpec::tiny(5).build(DType::F32).unwrap();
    let mut hook = FixedExit::new(3, 5).unwrap();
    let g = generate_early_exit(
        &model,
        &PROMPT,
        &GenerationParams::greedy(8),
        &mut hook,
        KvFill::Recompute,
        |_, _| Ok(()),
    )
    .unwrap();
    assert_eq!(g.depths, vec![3; 8]);
    let mut seq = PROMPT.to_vec();
    for &t in &g.generation.tokens {
        assert_eq!(t, argmax(&reference_exit_logits(&model, &seq, 3)));
        seq.push(t);
    }
}

#[test]
fn dense_after_prefill_exits_the_prompt_then_decodes_densely_on_a_dense_cache() {
    let model = SyntheticSpec::tiny(4).build(DType::F32).unwrap();
    let mut hook = FixedExit::new(2, 4).unwrap();
    let g = generate_early_exit(
        &model,
        &PROMPT,
        &GenerationParams::greedy(6),
        &mut hook,
        KvFill::DenseAfterPrefill,
        |_, _| Ok(()),
    )
    .unwrap();
    assert_eq!(g.depths, vec![2, 4, 4, 4, 4, 4]);
    let tokens = &g.generation.tokens;
    assert_eq!(
        tokens[0],
        argmax(&reference_exit_logits(&model, &PROMPT, 2))
    );
    let mut seq = PROMPT.to_vec();
    seq.push(tokens[0]);
    let rest = generate_dense(&model, &seq, &GenerationParams::greedy(5), |_| Ok(())).unwrap();
    assert_eq!(rest.tokens, tokens[1..]);

    // The filled prompt cache is the dense one.
    let (mut cache, mut backlog) = (model.new_cache(), Backlog::default());
    step(
        &model,
        &PROMPT,
        &mut cache,
        &mut backlog,
        Some(&mut hook),
        KvFill::DenseAfterPrefill,
    )
    .unwrap();
    assert_eq!(cache.holes(), vec![2, 3]);
    flush(&model, &mut cache, &mut backlog).unwrap();
    let dense = dense_cache(&model, &PROMPT);
    for index in 0..4 {
        assert!(layer_diff(&cache, &dense, index) < 1e-4);
    }
}

#[test]
fn kv_fill_names_parse_and_bad_ones_are_named() {
    for k in KvFill::ALL {
        assert_eq!(k.name().parse::<KvFill>().unwrap(), k);
    }
    let e = "copy".parse::<KvFill>().unwrap_err().to_string();
    assert!(
        e.contains("\"copy\"") && e.contains("dense_after_prefill"),
        "{e}"
    );
    assert!(FixedExit::new(0, 4).is_err() && FixedExit::new(5, 4).is_err());
}
