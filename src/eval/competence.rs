//! Is the dense model competent on this task? Agreement with dense and pruning mean something
//! only where dense accuracy is clearly above chance and its answers vary: a model that says
//! one label to everything "agrees" with any exit rule. Every report carries this verdict.

use super::ab::{Answer, Case, CaseOutcome};
use serde::Serialize;
use std::collections::HashMap;

/// The most common dense answer may cover at most this share of prompts for the answers to
/// count as varying.
pub const MAX_TOP_ANSWER_SHARE: f64 = 0.9;

#[derive(Debug, Clone, Serialize)]
pub struct Competence {
    pub accuracy: f64,
    /// 95 % Wilson score interval of the accuracy.
    pub ci_low: f64,
    pub ci_high: f64,
    /// 1 / the number of distinct gold labels.
    pub chance: f64,
    /// Share of prompts given the most common dense answer.
    pub top_answer_share: f64,
    /// `ci_low > chance` and `top_answer_share ≤ MAX_TOP_ANSWER_SHARE`.
    pub competent: bool,
}

/// The 95 % Wilson score interval of `hits` successes in `n`.
pub fn wilson_interval(hits: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (z, n) = (1.959_963_985, n as f64);
    let p = hits as f64 / n;
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z * ((p * (1.0 - p) + z * z / (4.0 * n)) / n).sqrt() / (1.0 + z * z / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// The verdict on `dense` answers to `cases`; `None` for tasks without gold labels
/// (generative answers are scored by exact match, with no chance level).
pub fn of_dense(dense: &[CaseOutcome], cases: &[Case]) -> Option<Competence> {
    let mut golds: Vec<u32> = cases.iter().filter_map(|c| c.gold).collect();
    if golds.len() != cases.len() || cases.is_empty() {
        return None;
    }
    let mut counts: HashMap<u32, usize> = HashMap::new();
    let mut hits = 0;
    for (outcome, case) in dense.iter().zip(cases) {
        let Answer::Token(t) = outcome.answer else {
            return None;
        };
        *counts.entry(t).or_default() += 1;
        hits += usize::from(case.gold == Some(t));
    }
    golds.sort_unstable();
    golds.dedup();
    let n = cases.len();
    let (ci_low, ci_high) = wilson_interval(hits, n);
    let chance = 1.0 / golds.len().max(2) as f64;
    let top_answer_share = counts.values().copied().max().unwrap_or(0) as f64 / n as f64;
    Some(Competence {
        accuracy: hits as f64 / n as f64,
        ci_low,
        ci_high,
        chance,
        top_answer_share,
        competent: ci_low > chance && top_answer_share <= MAX_TOP_ANSWER_SHARE,
    })
}

impl Competence {
    /// One line for the Markdown report.
    pub fn line(&self) -> String {
        let pct = |x: f64| format!("{:.1}%", 100.0 * x);
        let verdict = if self.competent {
            "competent: agreement and pruning below are meaningful".to_string()
        } else if self.ci_low <= self.chance {
            "NOT competent (accuracy not clearly above chance): agreement and pruning below say nothing about exits".to_string()
        } else {
            format!(
                "NOT competent (one answer on more than {:.0}% of prompts): agreement and pruning below say nothing about exits",
                100.0 * MAX_TOP_ANSWER_SHARE
            )
        };
        format!(
            "dense: accuracy {} (95% CI {}–{}, chance {}), most common answer on {} of prompts → {verdict}",
            pct(self.accuracy),
            pct(self.ci_low),
            pct(self.ci_high),
            pct(self.chance),
            pct(self.top_answer_share),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::tasks::Example;

    fn case(gold: u32) -> Case {
        Case {
            example: Example::new("0".into(), "x".into(), "y".into()),
            tokens: vec![1],
            gold: Some(gold),
        }
    }

    fn answered(t: u32) -> CaseOutcome {
        CaseOutcome {
            answer: Answer::Token(t),
            layers: 1.0,
            exit_layer: None,
            passes: Vec::new(),
            seconds: 0.0,
            trace: None,
        }
    }

    #[test]
    fn wilson_matches_a_known_interval() {
        // 50 of 100: 40.4 % – 59.6 %.
        let (lo, hi) = wilson_interval(50, 100);
        assert!(
            (lo - 0.4038).abs() < 1e-3 && (hi - 0.5962).abs() < 1e-3,
            "{lo} {hi}"
        );
    }

    #[test]
    fn a_constant_answer_is_not_competent_however_accurate_it_looks() {
        // Balanced labels, the model says 7 to all: 50 %, one answer on 100 %.
        let cases: Vec<Case> = (0..100)
            .map(|i| case(if i % 2 == 0 { 7 } else { 9 }))
            .collect();
        let constant: Vec<CaseOutcome> = (0..100).map(|_| answered(7)).collect();
        let c = of_dense(&constant, &cases).unwrap();
        assert!(!c.competent && c.top_answer_share == 1.0 && c.chance == 0.5);
        assert!(c.line().contains("NOT competent"), "{}", c.line());
        // 85 % right with varied answers is.
        let good: Vec<CaseOutcome> = cases
            .iter()
            .enumerate()
            .map(|(i, c)| {
                answered(if i % 7 == 0 {
                    16 - c.gold.unwrap()
                } else {
                    c.gold.unwrap()
                })
            })
            .collect();
        let c = of_dense(&good, &cases).unwrap();
        assert!(c.competent, "{c:?}");
    }
}
