//! Per-layer thresholds fitted to a risk level: a many-parameter exit rule for Learn-then-Test.
//!
//! One threshold per block, each chosen on the *selection* prompts alone: at risk level r, block
//! l's threshold is the lowest value θ for which the prompts whose signal at l is ≥ θ give an
//! answer that differs from dense on at most a share r of them, counted with one disagreement
//! added ((d + 1) / (c + 1) ≤ r, so a block needs about 1/r agreeing prompts before it may exit
//! at all). One r gives one rule; the r grid is a one-parameter family whose guarantee comes only
//! from the *test* prompts (Pareto Testing, arXiv 2210.07913: fit on one half, test on the other).

use super::replay::PromptTrace;
use crate::plugin::config::LayerThreshold;
use crate::plugin::policy::Signal;

/// The per-layer thresholds at risk level `risk`, fitted on `prompts` (indices into `traces`).
/// The last block is never listed (exiting there is running every block); blocks where no
/// threshold meets the risk are left out, so the rule never exits there.
pub fn fit(
    traces: &[PromptTrace],
    prompts: &[usize],
    signal: Signal,
    risk: f64,
) -> Vec<LayerThreshold> {
    let Some(depth) = prompts.iter().map(|&i| traces[i].rows.len()).min() else {
        return Vec::new();
    };
    let mut fitted = Vec::new();
    for index in 0..depth.saturating_sub(1) {
        // (signal, disagrees with dense) at this block, most confident first.
        let mut at: Vec<(f32, bool)> = prompts
            .iter()
            .map(|&i| {
                let t = &traces[i];
                (
                    signal.of(&t.rows[index]),
                    t.answers[index] != t.dense_answer(),
                )
            })
            .filter(|(value, _)| !value.is_nan())
            .collect();
        at.sort_by(|x, y| y.0.total_cmp(&x.0));
        let (mut count, mut disagreements, mut lowest) = (0usize, 0usize, None);
        let mut k = 0;
        while k < at.len() {
            // Prompts with equal values exit together: take the whole tie at once.
            let value = at[k].0;
            while k < at.len() && at[k].0 == value {
                count += 1;
                disagreements += usize::from(at[k].1);
                k += 1;
            }
            if (disagreements + 1) as f64 / (count + 1) as f64 <= risk {
                lowest = Some(value);
            }
        }
        if let Some(threshold) = lowest {
            fitted.push(LayerThreshold {
                layer: index + 1,
                threshold,
            });
        }
    }
    fitted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::features::FeatureRow;

    /// A trace whose answer at each block is `answers[i]` with gap `gaps[i]`.
    fn trace(gaps: &[f32], answers: &[u32]) -> PromptTrace {
        PromptTrace {
            rows: gaps
                .iter()
                .enumerate()
                .map(|(i, &gap)| FeatureRow {
                    layer: i + 1,
                    num_layers: gaps.len(),
                    values: vec![gap],
                    top1: answers[i],
                    top_prob: gap,
                    gap,
                })
                .collect(),
            answers: answers.to_vec(),
        }
    }

    #[test]
    fn each_block_gets_the_lowest_threshold_its_risk_allows() {
        // 99 prompts right at block 1 with gap 0.9, one wrong at 0.5, and 100 wrong at 0.2.
        let mut traces = Vec::new();
        traces.extend((0..99).map(|_| trace(&[0.9, 0.1, 1.0], &[1, 2, 1])));
        traces.push(trace(&[0.5, 0.1, 1.0], &[2, 2, 1]));
        traces.extend((0..100).map(|_| trace(&[0.2, 0.1, 1.0], &[2, 2, 1])));
        let all: Vec<usize> = (0..traces.len()).collect();
        // r = 1%: 99 agreeing, no disagreement → (0 + 1) / 100 ≤ 0.01: θ = 0.9; the 0.5 one breaks it.
        let fitted = fit(&traces, &all, Signal::Gap, 0.01);
        assert_eq!(
            fitted,
            vec![LayerThreshold {
                layer: 1,
                threshold: 0.9
            }]
        );
        // r = 2%: the 0.5 prompt may join ((1 + 1) / 101 ≤ 0.02); the 0.2 ones may not.
        let fitted = fit(&traces, &all, Signal::Gap, 0.02);
        assert_eq!(
            fitted,
            vec![LayerThreshold {
                layer: 1,
                threshold: 0.5
            }]
        );
        // Block 2 disagrees everywhere and block 3 is the last: neither is listed.
        assert!(fit(&traces, &all, Signal::Gap, 0.5)
            .iter()
            .all(|t| t.layer == 1));
    }

    #[test]
    fn too_few_prompts_never_exit() {
        let traces: Vec<_> = (0..50).map(|_| trace(&[0.9, 1.0], &[1, 1])).collect();
        let all: Vec<usize> = (0..50).collect();
        // 50 agreeing prompts cannot show a 1% risk: (0 + 1) / 51 > 0.01.
        assert!(fit(&traces, &all, Signal::Gap, 0.01).is_empty());
        assert_eq!(fit(&traces, &all, Signal::Gap, 0.02).len(), 1);
    }

    #[test]
    fn only_the_selection_prompts_are_read() {
        let mut traces: Vec<_> = (0..200).map(|_| trace(&[0.9, 1.0], &[1, 1])).collect();
        traces.extend((0..200).map(|_| trace(&[0.9, 1.0], &[2, 1])));
        let first: Vec<usize> = (0..200).collect();
        let second: Vec<usize> = (200..400).collect();
        assert_eq!(fit(&traces, &first, Signal::Gap, 0.01).len(), 1);
        assert!(fit(&traces, &second, Signal::Gap, 0.01).is_empty());
    }
}
