//! What `calibrate` reports beside the one certified rule: the rule each budget ε would certify
//! on the same fixed sequence (the accuracy–pruning curve as ε sweeps), and how those rules do
//! on prompts calibration never saw, beside dense and the oracle.

use super::guarantee::{fixed_sequence, Trial};
use super::metrics::pruning_ratio;
use super::replay::{PromptTrace, Replayed};
use crate::plugin::policy::oracle_exit_layer;

/// Among the rules that passed the walk (indices `0..=last` of the sequence), the one that runs
/// the fewest layers; the later one on a tie (every rule before the first failure is certified).
pub fn cheapest_passed(last: usize, layers: impl Fn(usize) -> f64) -> usize {
    (0..=last)
        .min_by(|&x, &y| layers(x).total_cmp(&layers(y)).then(y.cmp(&x)))
        .unwrap_or(0)
}

/// One budget's walk: the index into the sequence of the rule it chose (None: not even the
/// safest rule passed, so the answer is dense) and that rule's p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetChoice {
    pub epsilon: f64,
    pub chosen: Option<usize>,
    pub p_value: Option<f64>,
}

/// Walk `trials` (in test order) once per budget; each choice holds with probability ≥ 1 − δ on
/// its own (the budgets are not certified jointly).
pub fn walk_budgets(
    trials: &[Trial],
    budgets: &[f64],
    delta: f64,
    layers: impl Fn(usize) -> f64,
) -> Vec<BudgetChoice> {
    budgets
        .iter()
        .map(|&epsilon| {
            let certified = fixed_sequence(trials, epsilon, delta);
            let chosen = certified.chosen.map(|last| cheapest_passed(last, &layers));
            BudgetChoice {
                epsilon,
                chosen,
                p_value: chosen.map(|i| certified.p_values[i]),
            }
        })
        .collect()
}

/// A rule's record on a set of prompts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    pub accuracy: f64,
    pub agreement: f64,
    pub avg_layers: f64,
}

impl Measured {
    pub fn of(outcomes: &[Replayed]) -> Self {
        let n = outcomes.len().max(1) as f64;
        let count = |f: fn(&Replayed) -> bool| outcomes.iter().filter(|o| f(o)).count() as f64 / n;
        Self {
            accuracy: count(|o| o.correct),
            agreement: count(|o| o.agrees_with_dense),
            avg_layers: outcomes.iter().map(|o| o.layers as f64).sum::<f64>() / n,
        }
    }

    pub fn pruning(&self, layers: usize) -> f64 {
        pruning_ratio(self.avg_layers, layers)
    }
}

/// Dense on recorded passes: every block, its own answer.
pub fn dense(traces: &[PromptTrace], gold: &[Option<u32>]) -> Measured {
    let outcomes: Vec<Replayed> = traces
        .iter()
        .zip(gold)
        .map(|(t, g)| Replayed {
            layers: t.answers.len(),
            agrees_with_dense: true,
            correct: *g == Some(t.dense_answer()),
        })
        .collect();
    Measured::of(&outcomes)
}

/// The oracle on recorded passes: each prompt exits at the first block from which its answer
/// never changes again (it always agrees with dense, so its accuracy is dense's).
pub fn oracle(traces: &[PromptTrace], gold: &[Option<u32>]) -> Measured {
    let outcomes: Vec<Replayed> = traces
        .iter()
        .zip(gold)
        .map(|(t, g)| Replayed {
            layers: oracle_exit_layer(&t.answers),
            agrees_with_dense: true,
            correct: *g == Some(t.dense_answer()),
        })
        .collect();
    Measured::of(&outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::features::FeatureRow;

    fn trace(answers: &[u32]) -> PromptTrace {
        let row = |l: usize| FeatureRow {
            layer: l,
            num_layers: answers.len(),
            values: vec![],
            top1: 0,
            top_prob: 0.0,
            gap: 0.0,
        };
        PromptTrace {
            rows: (1..=answers.len()).map(row).collect(),
            answers: answers.to_vec(),
        }
    }

    #[test]
    fn the_oracle_exits_where_the_answer_stops_changing() {
        // Settles at block 3; never differs (block 1); flips back at the last block (block 4).
        let traces = [
            trace(&[1, 2, 3, 3]),
            trace(&[5, 5, 5, 5]),
            trace(&[1, 1, 2, 1]),
        ];
        let gold = [Some(3), Some(4), Some(1)];
        let m = oracle(&traces, &gold);
        assert!((m.avg_layers - (3.0 + 1.0 + 4.0) / 3.0).abs() < 1e-12);
        assert!((m.accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.agreement, 1.0);
        // Dense answers the same, with every block.
        let d = dense(&traces, &gold);
        assert_eq!((d.accuracy, d.avg_layers), (m.accuracy, 4.0));
    }

    #[test]
    fn each_budget_walks_the_same_sequence_and_keeps_the_cheapest_pass() {
        let t = |k| Trial {
            disagreements: k,
            prompts: 500,
        };
        // Safest first; the layers are not monotone in the order.
        let trials = [t(0), t(0), t(3), t(9), t(40)];
        let layers = [30.0, 29.0, 29.5, 27.0, 20.0];
        let choices = walk_budgets(&trials, &[0.001, 0.01, 0.05], 0.1, |i| layers[i]);
        // ε = 0.1%: even 0/500 gives p = 0.61 > δ.
        assert_eq!(choices[0].chosen, None);
        // ε = 1%: 0/500 passes (p = 0.007); 3/500 fails (P(Bin(500, 0.01) ≤ 3) = 0.26 > δ).
        assert_eq!(choices[1].chosen, Some(1));
        // ε = 5%: 40/500 = 8% fails, the four before pass; rule 3 runs the fewest layers.
        assert_eq!(choices[2].chosen, Some(3));
        assert!(choices[2].p_value.unwrap() <= 0.1);
    }
}
