//! The `crf` exit classifier (the paper's Table 4): a linear-chain CRF over a pass's layers with
//! two labels, continue (0) and exit-is-safe (1). Unlike the SVM and the logistic regression it
//! sees the layers as a sequence: a transition matrix learns that "safe" tends to stay safe once
//! reached, so one confident-looking layer between unsure ones weighs less.
//!
//! Scores: unary `w·x + b` for label 1 (0 for label 0, the reference), transitions `A[from][to]`.
//! At run time the policy cannot see later layers, so it asks the forward (filtering) marginal
//! P(y_t = 1 | x_1..x_t), one step per layer. Training maximises the L2-regularised conditional
//! log-likelihood of whole label sequences (forward–backward gradients, Adam). Our own weights,
//! stored in the classifier JSON and checked on load, rather than the `crfs` crate: its model
//! reader indexes by offsets from the file without checking them, so a tampered file panics.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearChainCrf {
    pub weights: Vec<f64>,
    pub intercept: f64,
    /// `transitions[from][to]`, labels 0 = continue, 1 = exit.
    pub transitions: [[f64; 2]; 2],
}

/// Training settings (`[train.crf]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrfTrainParams {
    /// L2 penalty per sequence on every weight.
    pub l2: f64,
    pub iterations: usize,
    pub learning_rate: f64,
}

impl Default for CrfTrainParams {
    fn default() -> Self {
        Self {
            l2: 1e-3,
            iterations: 300,
            learning_rate: 0.05,
        }
    }
}

/// The filter's state after some layers: log forward scores of the two labels.
pub type CrfState = Option<[f64; 2]>;

fn log_sum_exp(a: f64, b: f64) -> f64 {
    let m = a.max(b);
    m + ((a - m).exp() + (b - m).exp()).ln()
}

impl LinearChainCrf {
    fn unary(&self, x: &[f64]) -> [f64; 2] {
        let z: f64 = self.weights.iter().zip(x).map(|(w, v)| w * v).sum();
        [0.0, z + self.intercept]
    }

    /// Advance the filter by one layer; P(exit is safe here | the layers so far).
    pub fn step(&self, state: &mut CrfState, x: &[f64]) -> f64 {
        let u = self.unary(x);
        let alpha = match *state {
            None => u,
            Some(prev) => {
                let a = &self.transitions;
                [0, 1].map(|to| u[to] + log_sum_exp(prev[0] + a[0][to], prev[1] + a[1][to]))
            }
        };
        *state = Some(alpha);
        1.0 / (1.0 + (alpha[0] - alpha[1]).exp())
    }

    /// A loaded model must fit its feature list and hold finite numbers.
    pub fn check(&self, features: usize) -> Result<()> {
        if self.weights.len() != features {
            bail!(
                "crf has {} weights for {features} features",
                self.weights.len()
            );
        }
        let all = self
            .weights
            .iter()
            .chain([&self.intercept])
            .chain(self.transitions.iter().flatten());
        if all.into_iter().any(|v| !v.is_finite()) {
            bail!("crf weights must be finite numbers");
        }
        Ok(())
    }

    /// Fit on whole sequences (scaled features per layer, labels per layer).
    pub fn fit(sequences: &[(Vec<Vec<f64>>, Vec<bool>)], p: &CrfTrainParams) -> Result<Self> {
        let Some(width) = sequences.iter().find_map(|(x, _)| x.first().map(Vec::len)) else {
            bail!("crf training needs at least one non-empty sequence");
        };
        if !(p.l2 >= 0.0 && p.l2.is_finite() && p.learning_rate > 0.0 && p.iterations > 0) {
            bail!("[train.crf] needs l2 >= 0, learning_rate > 0 and iterations >= 1, got {p:?}");
        }
        // Parameters as one vector: weights, intercept, then the 4 transitions.
        let n = width + 1 + 4;
        let mut theta = vec![0.0; n];
        let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
        let (b1, b2, eps) = (0.9, 0.999, 1e-8);
        let count = sequences.len() as f64;
        for t in 1..=p.iterations {
            let model = Self::from_vector(&theta, width);
            let mut grad = vec![0.0; n];
            for (x, y) in sequences {
                model.add_gradient(x, y, &mut grad);
            }
            for (g, th) in grad.iter_mut().zip(&theta) {
                // Ascent on the mean log-likelihood minus the penalty.
                *g = *g / count - p.l2 * th;
            }
            for i in 0..n {
                m[i] = b1 * m[i] + (1.0 - b1) * grad[i];
                v[i] = b2 * v[i] + (1.0 - b2) * grad[i] * grad[i];
                let mh = m[i] / (1.0 - b1.powi(t as i32));
                let vh = v[i] / (1.0 - b2.powi(t as i32));
                theta[i] += p.learning_rate * mh / (vh.sqrt() + eps);
            }
        }
        let model = Self::from_vector(&theta, width);
        model.check(width)?;
        Ok(model)
    }

    fn from_vector(theta: &[f64], width: usize) -> Self {
        let a = &theta[width + 1..];
        Self {
            weights: theta[..width].to_vec(),
            intercept: theta[width],
            transitions: [[a[0], a[1]], [a[2], a[3]]],
        }
    }

    /// Add ∂ log p(y | x) to `grad` (layout of `from_vector`) by forward–backward.
    fn add_gradient(&self, x: &[Vec<f64>], y: &[bool], grad: &mut [f64]) {
        let len = x.len().min(y.len());
        if len == 0 {
            return;
        }
        let width = self.weights.len();
        let u: Vec<[f64; 2]> = x[..len].iter().map(|row| self.unary(row)).collect();
        let a = &self.transitions;
        let mut alpha = vec![[0.0; 2]; len];
        alpha[0] = u[0];
        for t in 1..len {
            alpha[t] = [0, 1].map(|to| {
                u[t][to] + log_sum_exp(alpha[t - 1][0] + a[0][to], alpha[t - 1][1] + a[1][to])
            });
        }
        let mut beta = vec![[0.0; 2]; len];
        for t in (0..len - 1).rev() {
            beta[t] = [0, 1].map(|from| {
                log_sum_exp(
                    a[from][0] + u[t + 1][0] + beta[t + 1][0],
                    a[from][1] + u[t + 1][1] + beta[t + 1][1],
                )
            });
        }
        let log_z = log_sum_exp(alpha[len - 1][0], alpha[len - 1][1]);
        for t in 0..len {
            let p1 = (alpha[t][1] + beta[t][1] - log_z).exp();
            let diff = f64::from(u8::from(y[t])) - p1;
            for (g, v) in grad[..width].iter_mut().zip(&x[t]) {
                *g += diff * v;
            }
            grad[width] += diff;
            if t > 0 {
                for from in 0..2 {
                    for to in 0..2 {
                        let pair = (alpha[t - 1][from] + a[from][to] + u[t][to] + beta[t][to]
                            - log_z)
                            .exp();
                        let seen = usize::from(y[t - 1]) == from && usize::from(y[t]) == to;
                        grad[width + 1 + 2 * from + to] += f64::from(u8::from(seen)) - pair;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Sequences of 12 layers where "safe" starts at a random layer and stays; the feature is
    /// noisy around the truth, so one layer alone is unreliable but the run of layers is not.
    fn sequences(n: usize, seed: u64) -> Vec<(Vec<Vec<f64>>, Vec<bool>)> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let start = rng.random_range(2..10);
                let y: Vec<bool> = (0..12).map(|t| t >= start).collect();
                let x = y
                    .iter()
                    .map(|&safe| vec![f64::from(u8::from(safe)) + rng.random_range(-0.9..0.9)])
                    .collect();
                (x, y)
            })
            .collect()
    }

    #[test]
    fn the_filter_learns_that_safe_stays_safe() {
        let crf = LinearChainCrf::fit(&sequences(300, 1), &CrfTrainParams::default()).unwrap();
        assert!(crf.weights[0] > 0.0, "{crf:?}");
        // Staying safe is likelier than leaving it.
        assert!(crf.transitions[1][1] > crf.transitions[1][0], "{crf:?}");
        // The filtered marginal separates the labels better than chance on new sequences.
        let (mut right, mut total) = (0, 0);
        for (x, y) in sequences(100, 2) {
            let mut state = None;
            for (row, &label) in x.iter().zip(&y) {
                right += usize::from((crf.step(&mut state, row) >= 0.5) == label);
                total += 1;
            }
        }
        assert!(right as f64 / total as f64 > 0.8, "{right}/{total}");
    }

    #[test]
    fn the_gradient_matches_finite_differences() {
        let data = sequences(3, 5);
        let crf = LinearChainCrf {
            weights: vec![0.7],
            intercept: -0.3,
            transitions: [[0.2, -0.4], [0.1, 0.5]],
        };
        let log_lik = |c: &LinearChainCrf| -> f64 {
            data.iter()
                .map(|(x, y)| {
                    let mut state = None;
                    for row in x {
                        c.step(&mut state, row);
                    }
                    let [a0, a1] = state.unwrap();
                    let log_z = log_sum_exp(a0, a1);
                    let mut score = 0.0;
                    for t in 0..x.len() {
                        score += c.unary(&x[t])[usize::from(y[t])];
                        if t > 0 {
                            score += c.transitions[usize::from(y[t - 1])][usize::from(y[t])];
                        }
                    }
                    score - log_z
                })
                .sum()
        };
        let mut grad = vec![0.0; 6];
        for (x, y) in &data {
            crf.add_gradient(x, y, &mut grad);
        }
        let theta = [0.7, -0.3, 0.2, -0.4, 0.1, 0.5];
        for i in 0..6 {
            let mut up = theta;
            up[i] += 1e-5;
            let mut down = theta;
            down[i] -= 1e-5;
            let numeric = (log_lik(&LinearChainCrf::from_vector(&up, 1))
                - log_lik(&LinearChainCrf::from_vector(&down, 1)))
                / 2e-5;
            assert!(
                (numeric - grad[i]).abs() < 1e-4,
                "θ{i}: {numeric} vs {}",
                grad[i]
            );
        }
    }

    #[test]
    fn bad_models_and_settings_are_refused() {
        let mut crf = LinearChainCrf::fit(&sequences(20, 3), &CrfTrainParams::default()).unwrap();
        crf.check(1).unwrap();
        assert!(crf.check(2).unwrap_err().to_string().contains("2 features"));
        crf.transitions[0][1] = f64::NAN;
        assert!(crf.check(1).unwrap_err().to_string().contains("finite"));
        let bad = CrfTrainParams {
            learning_rate: 0.0,
            ..CrfTrainParams::default()
        };
        assert!(LinearChainCrf::fit(&sequences(5, 4), &bad).is_err());
        assert!(LinearChainCrf::fit(&[], &CrfTrainParams::default()).is_err());
    }
}
