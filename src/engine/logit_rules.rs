//! What a request may ask of the sampler besides temperature / top-k / top-p: penalties against
//! repeating (applied as vLLM and mistral.rs do), a per-token logit bias, and a log of each
//! step's log-probabilities for the response. The model's logits are never changed in place:
//! the rules act on a copy, and the log records the model's own (unbiased) distribution, as
//! vLLM's default `raw_logprobs` does.

use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq)]
pub struct LogitRules {
    /// Subtracted once per earlier occurrence of the token in the output (OpenAI; 0 = off).
    pub frequency_penalty: f32,
    /// Subtracted once if the token occurred in the output at all (OpenAI; 0 = off).
    pub presence_penalty: f32,
    /// Tokens of the prompt or the output: positive logits divided by it, negative ones
    /// multiplied (HF / vLLM; 1 = off).
    pub repetition_penalty: f32,
    /// Added to the token's logit; -100 or less bans the token outright.
    pub logit_bias: Vec<(u32, f32)>,
    /// Record each sampled step here.
    pub logprobs: Option<LogprobLog>,
}

impl Default for LogitRules {
    fn default() -> Self {
        Self {
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            repetition_penalty: 1.0,
            logit_bias: Vec::new(),
            logprobs: None,
        }
    }
}

impl LogitRules {
    /// Whether the logits go to the sampler untouched (and nothing is recorded).
    pub fn is_plain(&self) -> bool {
        !self.changes_logits() && self.logprobs.is_none()
    }

    pub fn changes_logits(&self) -> bool {
        self.frequency_penalty != 0.0
            || self.presence_penalty != 0.0
            || self.repetition_penalty != 1.0
            || !self.logit_bias.is_empty()
    }

    /// `logits` with the penalties (given each token's count in the output, and whether it is
    /// in the prompt) and the bias applied.
    pub fn apply(
        &self,
        logits: &[f32],
        output_count: impl Fn(u32) -> u32,
        in_prompt: impl Fn(u32) -> bool,
    ) -> Vec<f32> {
        let mut out = logits.to_vec();
        let penalize = self.frequency_penalty != 0.0
            || self.presence_penalty != 0.0
            || self.repetition_penalty != 1.0;
        if penalize {
            for (token, logit) in out.iter_mut().enumerate() {
                let token = token as u32;
                let count = output_count(token);
                if self.repetition_penalty != 1.0 && (count > 0 || in_prompt(token)) {
                    *logit = match *logit > 0.0 {
                        true => *logit / self.repetition_penalty,
                        false => *logit * self.repetition_penalty,
                    };
                }
                if count > 0 {
                    *logit -= self.frequency_penalty * count as f32 + self.presence_penalty;
                }
            }
        }
        for &(token, bias) in &self.logit_bias {
            if let Some(logit) = out.get_mut(token as usize) {
                *logit = if bias <= -100.0 {
                    f32::NEG_INFINITY
                } else {
                    *logit + bias
                };
            }
        }
        out
    }
}

/// One sampled step: the chosen token's log-probability and the `top` most likely tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct StepLogprobs {
    pub token: u32,
    pub logprob: f32,
    /// Most likely first.
    pub top: Vec<(u32, f32)>,
}

/// Where a sampler writes its steps; the request's handler reads them as tokens come out
/// (the generation loops own their samplers, so a shared log is how the steps get out).
#[derive(Debug, Clone)]
pub struct LogprobLog {
    /// How many top alternatives to keep per step.
    pub top: usize,
    steps: Arc<Mutex<Vec<StepLogprobs>>>,
}

impl PartialEq for LogprobLog {
    fn eq(&self, other: &Self) -> bool {
        self.top == other.top && Arc::ptr_eq(&self.steps, &other.steps)
    }
}

impl LogprobLog {
    pub fn new(top: usize) -> Self {
        Self {
            top,
            steps: Default::default(),
        }
    }

    pub fn push(&self, step: StepLogprobs) {
        self.steps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(step);
    }

    /// The steps recorded so far.
    pub fn steps(&self) -> Vec<StepLogprobs> {
        self.steps.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Step `i`, if it was recorded.
    pub fn get(&self, i: usize) -> Option<StepLogprobs> {
        let steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        steps.get(i).cloned()
    }
}

/// Log-softmax of `logits` (in f64, so a large vocabulary does not lose the tail).
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let log_sum = max + sum.ln();
    logits
        .iter()
        .map(|&l| (l as f64 - log_sum) as f32)
        .collect()
}

/// `token`'s log-probability under `logits`, with the `top` most likely tokens.
pub fn step_logprobs(logits: &[f32], token: u32, top: usize) -> StepLogprobs {
    let logprobs = log_softmax(logits);
    let mut order: Vec<u32> = (0..logprobs.len() as u32).collect();
    let top = top.min(order.len());
    if top > 0 {
        order.select_nth_unstable_by(top - 1, |&a, &b| {
            logprobs[b as usize].total_cmp(&logprobs[a as usize])
        });
    }
    order.truncate(top);
    order.sort_by(|&a, &b| logprobs[b as usize].total_cmp(&logprobs[a as usize]));
    StepLogprobs {
        token,
        logprob: logprobs
            .get(token as usize)
            .copied()
            .unwrap_or(f32::NEG_INFINITY),
        top: order
            .into_iter()
            .map(|t| (t, logprobs[t as usize]))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_sums_to_one_and_top_is_sorted() {
        let logits = [1.0f32, 3.0, 2.0, -1.0];
        let total: f32 = log_softmax(&logits).iter().map(|l| l.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
        let s = step_logprobs(&logits, 2, 3);
        assert_eq!(s.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2, 0]);
        assert_eq!(s.logprob, s.top[1].1);
        assert!(s.top.windows(2).all(|w| w[0].1 >= w[1].1));
        assert!(step_logprobs(&logits, 0, 0).top.is_empty());
    }

    #[test]
    fn penalties_and_bias_act_on_seen_tokens_only() {
        let rules = LogitRules {
            frequency_penalty: 0.5,
            presence_penalty: 1.0,
            repetition_penalty: 2.0,
            logit_bias: vec![(3, -100.0), (2, 5.0), (99, 1.0)],
            logprobs: None,
        };
        let counts = |t: u32| if t == 0 { 2 } else { 0 };
        let out = rules.apply(&[4.0, -2.0, 1.0, 1.0], counts, |t| t == 1);
        // token 0: 4 / 2 - (0.5 * 2 + 1); token 1 (prompt only): -2 * 2.
        assert_eq!(out, vec![0.0, -4.0, 6.0, f32::NEG_INFINITY]);
        assert!(LogitRules::default().is_plain());
    }
}
