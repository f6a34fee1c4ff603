//! Exit rules held to a budget with a stated guarantee: Learn-then-Test with fixed-sequence
//! testing (CALM, arXiv 2207.07061, §3).
//!
//! A rule's risk is the share of new prompts of the task whose answer differs from the dense
//! model's. For each candidate, from safest to most aggressive, we test the null hypothesis
//! "risk > ε" with the exact binomial tail of the disagreements seen on `n` calibration prompts,
//! and walk the sequence while the p-value stays ≤ δ. The last rule that passed has risk ≤ ε
//! with probability ≥ 1 − δ over the draw of the calibration prompts (the prompt is the unit;
//! prompts must be exchangeable with the ones the rule will see). Fixed-sequence testing needs
//! no multiplicity correction because the order is fixed before the data is looked at.

/// P(Binomial(n, ε) ≤ k): the p-value of "risk > ε" after `k` disagreements in `n` prompts
/// (a rule whose risk were ε would show this few this rarely). Summed in log space, so large
/// `n` does not underflow.
pub fn binomial_p_value(k: usize, n: usize, epsilon: f64) -> f64 {
    if k >= n || epsilon >= 1.0 {
        return 1.0;
    }
    if epsilon <= 0.0 {
        return if k == n { 1.0 } else { 0.0 };
    }
    let (log_p, log_q) = (epsilon.ln(), (1.0 - epsilon).ln());
    // log C(n, i) p^i q^(n-i), term by term.
    let mut log_term = n as f64 * log_q;
    let mut terms = vec![log_term];
    for i in 0..k {
        log_term += ((n - i) as f64).ln() - ((i + 1) as f64).ln() + log_p - log_q;
        terms.push(log_term);
    }
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = terms.iter().map(|t| (t - max).exp()).sum();
    (max + sum.ln()).exp().min(1.0)
}

/// The fewest calibration prompts with which any rule can pass: even a rule that never
/// disagrees needs (1 − ε)^n ≤ δ.
pub fn min_prompts(epsilon: f64, delta: f64) -> usize {
    if epsilon <= 0.0 || epsilon >= 1.0 || delta <= 0.0 || delta >= 1.0 {
        return usize::MAX;
    }
    (delta.ln() / (1.0 - epsilon).ln()).ceil() as usize
}

/// One candidate's record on the calibration prompts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trial {
    /// Prompts whose answer differed from dense.
    pub disagreements: usize,
    pub prompts: usize,
}

/// What fixed-sequence testing concluded.
#[derive(Debug, Clone, PartialEq)]
pub struct Certified {
    /// Index (into the candidates, safest first) of the most aggressive rule that passed;
    /// `None`: not even the first passed.
    pub chosen: Option<usize>,
    /// Every candidate's p-value, in order (those after the first failure were not tested
    /// and are reported for information only).
    pub p_values: Vec<f64>,
}

/// Walk `trials` (ordered safest → most aggressive) while each p-value is ≤ δ.
pub fn fixed_sequence(trials: &[Trial], epsilon: f64, delta: f64) -> Certified {
    let p_values: Vec<f64> = trials
        .iter()
        .map(|t| binomial_p_value(t.disagreements, t.prompts, epsilon))
        .collect();
    let passed = p_values.iter().take_while(|&&p| p <= delta).count();
    Certified {
        chosen: passed.checked_sub(1),
        p_values,
    }
}

/// The test order for rules with several parameters, fixed on a selection half of the prompts
/// before the test half is looked at (after Pareto Testing, arXiv 2210.07913): lowest measured
/// risk first, and among equal risks the most layers first, so the walk starts from the safest
/// rules. Every rule before the walk's first failure is certified, so the caller may take the
/// cheapest of them even where the order is not monotone in layers.
pub fn selection_order(risk_and_layers: &[(f64, f64)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..risk_and_layers.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, la) = risk_and_layers[a];
        let (rb, lb) = risk_and_layers[b];
        ra.total_cmp(&rb).then(lb.total_cmp(&la)).then(a.cmp(&b))
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn p_values_match_closed_forms() {
        // k = 0: (1 − ε)^n.
        assert!((binomial_p_value(0, 230, 0.01) - 0.99f64.powi(230)).abs() < 1e-12);
        // n = 2, k = 1, ε = 0.5: 1 − 0.25.
        assert!((binomial_p_value(1, 2, 0.5) - 0.75).abs() < 1e-12);
        assert_eq!(binomial_p_value(5, 5, 0.1), 1.0);
        // Large n stays finite and in [0, 1].
        let p = binomial_p_value(400, 10_000, 0.05);
        assert!(p > 1e-7 && p < 1e-5, "{p}"); // 4.6 sd below the mean
    }

    #[test]
    fn the_prompt_count_needed_is_stated() {
        // The figure: ε = 1 %, δ = 0.1 needs about 230 prompts.
        assert_eq!(min_prompts(0.01, 0.1), 230);
        assert!(binomial_p_value(0, 229, 0.01) > 0.1);
        assert!(binomial_p_value(0, 230, 0.01) <= 0.1);
    }

    #[test]
    fn the_selection_order_starts_from_the_safest_rules() {
        // (risk, layers) on the selection half.
        let points = [(0.01, 25.0), (0.0, 20.0), (0.0, 30.0), (0.05, 10.0)];
        assert_eq!(selection_order(&points), vec![2, 1, 0, 3]);
    }

    #[test]
    fn the_walk_stops_at_the_first_failure() {
        let t = |k| Trial {
            disagreements: k,
            prompts: 500,
        };
        // Third fails; the fourth would pass alone but is never reached.
        let c = fixed_sequence(&[t(0), t(1), t(12), t(0)], 0.01, 0.1);
        assert_eq!(c.chosen, Some(1));
        assert_eq!(c.p_values.len(), 4);
        assert_eq!(fixed_sequence(&[t(12)], 0.01, 0.1).chosen, None);
    }

    /// The guarantee itself: candidates with known risks, calibration sets drawn many times;
    /// the chosen rule's true risk exceeds ε in at most δ of the draws.
    #[test]
    fn the_chosen_rule_breaks_the_budget_in_at_most_delta_of_draws() {
        let (epsilon, delta, n, draws) = (0.05, 0.1, 300, 2000);
        // Safest to most aggressive; risks cross ε in the middle, near it, where a plug-in
        // estimate would be fooled most often.
        let risks = [0.0, 0.01, 0.03, 0.045, 0.05, 0.055, 0.07, 0.1, 0.2];
        let mut rng = StdRng::seed_from_u64(7);
        let mut broken = 0;
        let mut chose_something = 0;
        for _ in 0..draws {
            // One shared draw of prompts: prompt i's disagreement under rule r is u_i < risk_r,
            // so riskier rules disagree on a superset, as exits at more layers do.
            let u: Vec<f64> = (0..n).map(|_| rng.random::<f64>()).collect();
            let trials: Vec<Trial> = risks
                .iter()
                .map(|&r| Trial {
                    disagreements: u.iter().filter(|&&x| x < r).count(),
                    prompts: n,
                })
                .collect();
            if let Some(i) = fixed_sequence(&trials, epsilon, delta).chosen {
                chose_something += 1;
                if risks[i] > epsilon {
                    broken += 1;
                }
            }
        }
        let rate = broken as f64 / draws as f64;
        assert!(rate <= delta, "budget broken in {rate} of draws");
        // And it is not vacuous: it usually certifies a rule.
        assert!(chose_something > draws / 2, "{chose_something}");
    }
}
