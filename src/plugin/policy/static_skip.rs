//! Static, input-independent layer skipping, decided once and applied to every pass:
//! - `shortgpt` (Men et al. 2024): drop the last N layers, or the N layers with the lowest Block
//!   Influence BI = 1 − cos(layer input, layer output), averaged over every token of a few
//!   calibration prompts;
//! - `unified_skip` (arXiv 2404.06954): from a target speedup s (dense layers / layers run),
//!   skip n = round(L · (1 − 1/s)) layers, capped at L − 2, spread evenly over the intermediate
//!   layers so the first and the last always run.

use super::ExitPolicy;
use crate::engine::Outputs;
use crate::eval::tasks::{load_examples, prompt, Split, Task};
use crate::hook::{Decision, LayerHook, LayerView, PassInfo, SkipPlan};
use crate::plugin::config::ShortGptParams;
use crate::plugin::features::{cosine, FeatureRow};
use crate::Engine;
use anyhow::{bail, Context, Result};

pub struct StaticSkip {
    name: &'static str,
    /// 0-based blocks to skip.
    layers: Vec<usize>,
    num_layers: usize,
}

impl StaticSkip {
    pub fn unified(target_speedup: f64, num_layers: usize) -> Result<Self> {
        Ok(Self {
            name: "unified_skip",
            layers: unified_skip_layers(num_layers, target_speedup)?,
            num_layers,
        })
    }

    pub fn shortgpt(params: &ShortGptParams, engine: &Engine) -> Result<Self> {
        let n = engine.model.num_layers();
        let layers = match params.by.as_str() {
            "last" => shortgpt_drop_last(n, params.layers)?,
            "block_influence" => {
                check_drop_count(n, params.layers)?;
                let task = Task::parse(&params.calibration_task)?;
                let prompts: Vec<String> =
                    load_examples(task, Split::Train, Some(params.calibration_limit))?
                        .iter()
                        .map(prompt)
                        .collect();
                let bi = block_influence(engine, &prompts)?;
                lowest(&bi, params.layers)
            }
            other => {
                bail!("[policy.shortgpt] by = {other:?}: expected \"last\" or \"block_influence\"")
            }
        };
        Ok(Self {
            name: "shortgpt",
            layers,
            num_layers: n,
        })
    }

    /// The skipped blocks, 0-based.
    pub fn layers(&self) -> &[usize] {
        &self.layers
    }
}

impl ExitPolicy for StaticSkip {
    fn name(&self) -> &str {
        self.name
    }

    fn plan(&mut self, info: &PassInfo) -> Result<SkipPlan> {
        if info.num_layers != self.num_layers {
            bail!(
                "{} was planned for {} layers, but this model has {}",
                self.name,
                self.num_layers,
                info.num_layers
            );
        }
        Ok(SkipPlan::from_layers(self.layers.iter().copied()))
    }

    fn watches_layers(&self) -> bool {
        false
    }

    fn decide(&mut self, _row: &FeatureRow) -> Decision {
        Decision::Continue
    }
}

/// n = round(L · (1 − 1/s)), capped at L − 2 (first and last always run).
pub fn unified_skip_count(num_layers: usize, target_speedup: f64) -> Result<usize> {
    if !target_speedup.is_finite() || target_speedup < 1.0 {
        bail!("unified_skip target_speedup must be ≥ 1, got {target_speedup}");
    }
    let n = (num_layers as f64 * (1.0 - 1.0 / target_speedup)).round() as usize;
    Ok(n.min(num_layers.saturating_sub(2)))
}

/// The 0-based blocks unified skipping leaves out: n of the L − 2 intermediate blocks, the i-th
/// at 1 + ⌊(i + ½) · (L − 2) / n⌋ (evenly spaced, centred in their share).
pub fn unified_skip_layers(num_layers: usize, target_speedup: f64) -> Result<Vec<usize>> {
    let n = unified_skip_count(num_layers, target_speedup)?;
    let middle = num_layers.saturating_sub(2);
    Ok((0..n)
        .map(|i| 1 + ((i as f64 + 0.5) * middle as f64 / n as f64).floor() as usize)
        .collect())
}

fn check_drop_count(num_layers: usize, n: usize) -> Result<()> {
    if n >= num_layers {
        bail!("shortgpt cannot drop {n} of {num_layers} layers: at least one must run");
    }
    Ok(())
}

/// ShortGPT's simplest form: the last `n` blocks.
pub fn shortgpt_drop_last(num_layers: usize, n: usize) -> Result<Vec<usize>> {
    check_drop_count(num_layers, n)?;
    Ok((num_layers - n..num_layers).collect())
}

/// Indices of the `n` smallest values, ascending by index.
fn lowest(values: &[f64], n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut picked: Vec<usize> = order.into_iter().take(n).collect();
    picked.sort();
    picked
}

/// Mean Block Influence of every layer over all tokens of `prompts` (dense passes).
pub fn block_influence(engine: &Engine, prompts: &[String]) -> Result<Vec<f64>> {
    if prompts.is_empty() {
        bail!("block influence needs at least one calibration prompt");
    }
    let mut hook = InfluenceMeter {
        sums: vec![0.0; engine.model.num_layers()],
        tokens: 0,
    };
    for text in prompts {
        let ids = engine.encode(text)?;
        let mut cache = engine.model.new_cache();
        engine
            .model
            .forward(&ids, &mut cache, Some(&mut hook), Outputs::LastToken)
            .context("block influence calibration pass")?;
        hook.tokens += ids.len();
    }
    Ok(hook.sums.iter().map(|s| s / hook.tokens as f64).collect())
}

struct InfluenceMeter {
    sums: Vec<f64>,
    tokens: usize,
}

impl LayerHook for InfluenceMeter {
    fn name(&self) -> &str {
        "block_influence"
    }

    fn after_layer(&mut self, view: &mut LayerView<'_>) -> Result<Decision> {
        let input: Vec<Vec<f32>> = view
            .input
            .squeeze(0)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec2()?;
        let output: Vec<Vec<f32>> = view
            .hidden
            .squeeze(0)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec2()?;
        for (x, y) in input.iter().zip(&output) {
            let c = cosine(x, y);
            if c.is_finite() {
                self.sums[view.index] += 1.0 - c as f64;
            }
        }
        Ok(Decision::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unified_skip_follows_the_formula() {
        // L = 12, s = 1.5: n = round(12 · 1/3) = 4 of the 10 middle blocks, at
        // 1 + ⌊(i + ½) · 2.5⌋ = 2, 4, 7, 9.
        assert_eq!(unified_skip_count(12, 1.5).unwrap(), 4);
        assert_eq!(unified_skip_layers(12, 1.5).unwrap(), vec![2, 4, 7, 9]);
        // s = 2: n = 6, spacing 10/6: 1 + ⌊0.83⌋, ⌊2.5⌋, ⌊4.17⌋, ⌊5.83⌋, ⌊7.5⌋, ⌊9.17⌋.
        assert_eq!(
            unified_skip_layers(12, 2.0).unwrap(),
            vec![1, 3, 5, 6, 8, 10]
        );
        assert!(unified_skip_layers(12, 1.0).unwrap().is_empty());
        // A huge speedup still keeps the first and last block.
        assert_eq!(unified_skip_layers(6, 100.0).unwrap(), vec![1, 2, 3, 4]);
        assert!(unified_skip_count(12, 0.5).is_err());
        for (l, s) in [(12, 1.3), (32, 1.7), (24, 3.0), (7, 1.2)] {
            let layers = unified_skip_layers(l, s).unwrap();
            assert_eq!(layers.len(), unified_skip_count(l, s).unwrap());
            assert!(layers.windows(2).all(|w| w[0] < w[1]), "{layers:?}");
            assert!(layers.iter().all(|&i| i > 0 && i < l - 1), "{layers:?}");
        }
    }

    #[test]
    fn shortgpt_drops_the_last_n() {
        assert_eq!(shortgpt_drop_last(12, 3).unwrap(), vec![9, 10, 11]);
        assert!(shortgpt_drop_last(12, 12).is_err());
        assert_eq!(lowest(&[0.5, 0.1, 0.3, 0.05], 2), vec![1, 3]);
    }
}
