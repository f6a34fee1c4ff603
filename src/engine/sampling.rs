//! Picking the next token from logits: greedy, or temperature / top-k / top-p with a seed,
//! after the request's [`LogitRules`] (penalties, logit bias; logprob recording).

use super::logit_rules::{step_logprobs, LogitRules};
use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingParams {
    /// 0 means greedy (argmax).
    #[serde(default)]
    pub temperature: f64,
    /// Keep only the k most likely tokens (0 = off).
    #[serde(default)]
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1.0 = off).
    #[serde(default = "one")]
    pub top_p: f64,
    #[serde(default)]
    pub seed: u64,
    /// Per-request rules (penalties, bias, logprobs): API fields, not config keys.
    #[serde(skip)]
    pub rules: LogitRules,
}

fn one() -> f64 {
    1.0
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self::greedy()
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
            rules: LogitRules::default(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            bail!(
                "temperature must be a finite number >= 0, got {}",
                self.temperature
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!("top_p must be in (0, 1], got {}", self.top_p);
        }
        let r = &self.rules;
        if !(r.repetition_penalty > 0.0 && r.repetition_penalty.is_finite()) {
            bail!(
                "repetition_penalty must be a finite number > 0, got {}",
                r.repetition_penalty
            );
        }
        if !(r.frequency_penalty.is_finite() && r.presence_penalty.is_finite()) {
            bail!("frequency_penalty and presence_penalty must be finite numbers");
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// Tokens of the prompt (the repetition penalty counts them).
    prompt: HashSet<u32>,
    /// How often each token was sampled so far (the penalties count them).
    output: HashMap<u32, u32>,
}

pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        Self::for_prompt(params, &[])
    }

    /// A sampler for a sequence that starts with `prompt` (which the repetition penalty sees).
    pub fn for_prompt(params: SamplingParams, prompt: &[u32]) -> Result<Self> {
        params.validate()?;
        let rng = StdRng::seed_from_u64(params.seed);
        let prompt = match params.rules.repetition_penalty != 1.0 {
            true => prompt.iter().copied().collect(),
            false => HashSet::new(),
        };
        Ok(Self {
            params,
            rng,
            prompt,
            output: HashMap::new(),
        })
    }

    /// The distribution tokens are drawn from after temperature, top-k and top-p, as
    /// (token, probability) pairs; greedy gives the argmax with probability 1.
    pub fn distribution(&self, logits: &[f32]) -> Vec<(u32, f32)> {
        if self.params.is_greedy() {
            return vec![(argmax(logits), 1.0)];
        }
        let t = self.params.temperature as f32;
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        if self.params.top_k > 0 {
            order.truncate(self.params.top_k);
        }
        let max = logits[order[0] as usize];
        let mut probs: Vec<f32> = order
            .iter()
            .map(|&i| ((logits[i as usize] - max) / t).exp())
            .collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if self.params.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = probs
                .iter()
                .position(|&p| {
                    acc += p;
                    acc >= self.params.top_p as f32
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
            order.truncate(keep);
            let sum: f32 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= sum);
        }
        order.into_iter().zip(probs).collect()
    }

    /// A uniform draw in [0, 1) from the sampler's seeded stream.
    pub fn uniform(&mut self) -> f32 {
        self.rng.random::<f32>()
    }

    /// Draw from a (token, probability) list.
    pub fn draw(&mut self, dist: &[(u32, f32)]) -> u32 {
        let u = self.uniform();
        let mut acc = 0.0;
        for &(token, p) in dist {
            acc += p;
            if u < acc {
                return token;
            }
        }
        dist.last().map_or(0, |d| d.0)
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let rules = &self.params.rules;
        if rules.is_plain() {
            return self.pick(logits);
        }
        let token = match rules.changes_logits() {
            true => {
                let output = &self.output;
                let prompt = &self.prompt;
                let adjusted = rules.apply(
                    logits,
                    |t| output.get(&t).copied().unwrap_or(0),
                    |t| prompt.contains(&t),
                );
                self.pick(&adjusted)
            }
            false => self.pick(logits),
        };
        if let Some(log) = &self.params.rules.logprobs {
            log.push(step_logprobs(logits, token, log.top));
        }
        *self.output.entry(token).or_default() += 1;
        token
    }

    fn pick(&mut self, logits: &[f32]) -> u32 {
        if self.params.is_greedy() {
            return argmax(logits);
        }
        let dist = self.distribution(logits);
        self.draw(&dist)
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, -1.0]), 1);
    }

    #[test]
    fn top_k_one_is_argmax_and_seed_repeats() {
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 1,
            top_p: 1.0,
            seed: 7,
            ..SamplingParams::greedy()
        };
        let mut s = Sampler::new(p).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, 2.9]), 1);
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 7,
            ..SamplingParams::greedy()
        };
        let logits = [0.0f32, 0.5, 0.3, 0.2];
        let a: Vec<u32> = {
            let mut s = Sampler::new(p.clone()).unwrap();
            (0..20).map(|_| s.sample(&logits)).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(p).unwrap();
            (0..20).map(|_| s.sample(&logits)).collect()
        };
        assert_eq!(a, b);
        assert!(
            a.iter().any(|&t| t != a[0]),
            "sampling at T=1 should vary: {a:?}"
        );
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.5,
            seed: 0,
            ..SamplingParams::greedy()
        };
        let s = Sampler::new(p).unwrap();
        let dist = s.distribution(&[5.0, 0.0, 0.0, 0.0]);
        assert_eq!(dist.len(), 1);
        assert_eq!(dist[0].0, 0);
    }

    #[test]
    fn bad_params_are_refused() {
        let p = SamplingParams {
            temperature: -1.0,
            ..SamplingParams::greedy()
        };
        assert!(Sampler::new(p).is_err());
        let p = SamplingParams {
            top_p: 0.0,
            ..SamplingParams::greedy()
        };
        assert!(Sampler::new(p).unwrap_err().to_string().contains("top_p"));
    }
}
