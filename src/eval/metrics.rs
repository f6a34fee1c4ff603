//! The numbers an A/B run reports: accuracy, activated layers (mean and variance), pruning
//! ratio, FLOPs ratio, agreement with dense, and SQuAD's exact match / F1.
//!
//! FLOPs (the paper's eq. 2). The paper counts a transformer block as `24·b·s·h² + 4·b·s²·h`
//! FLOPs (Megatron-style: 2 FLOPs per multiply-accumulate of the projections and a 4h MLP, plus
//! the two `s×s` attention products) and compares the layers an input activates with all of them.
//! We could not retrieve the equation's exact text here, so this module states what it computes:
//! a block costs `2·block_macs_per_token·s + 4·s·c·(heads·head_dim)` FLOPs for `s` new tokens
//! attending to `c` positions (the same count, generalised to GQA and SwiGLU through
//! [`ModelConfig::block_macs_per_token`]); every LM-head probe a policy takes costs `2·h·n` for `n`
//! probed ids, and the final LM head `2·h·V` on the last token. The ratio is the arm's total over
//! the dense total on the same passes.

use crate::engine::ModelConfig;

/// Share of true values; 0 for an empty slice.
pub fn accuracy(correct: &[bool]) -> f64 {
    if correct.is_empty() {
        return 0.0;
    }
    correct.iter().filter(|&&c| c).count() as f64 / correct.len() as f64
}

pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Population variance (the spread of activated layers over the evaluated inputs).
pub fn variance(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let m = mean(xs);
    xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / xs.len() as f64
}

/// Share of layers not run: `1 − avg_layers / num_layers`.
pub fn pruning_ratio(avg_layers: f64, num_layers: usize) -> f64 {
    if num_layers == 0 {
        return 0.0;
    }
    1.0 - avg_layers / num_layers as f64
}

/// Share of positions where both sides gave the same answer.
pub fn agreement<T: PartialEq>(a: &[T], b: &[T]) -> f64 {
    let n = a.len().min(b.len());
    if n == 0 {
        return 0.0;
    }
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / n as f64
}

/// What one forward pass cost, as the FLOPs model needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PassCost {
    /// Tokens fed in the pass.
    pub tokens: usize,
    /// Positions they attend to (cache length + tokens).
    pub context: usize,
    pub layers_run: usize,
    /// LM-head probes the policy took, each over `probe_width` ids.
    pub probes: usize,
    pub probe_width: usize,
}

/// FLOPs of passes through one model (see the module doc for the formula).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlopsModel {
    pub num_layers: usize,
    pub block_macs_per_token: usize,
    /// heads × head_dim: the width of the attention products.
    pub attention_width: usize,
    pub hidden: usize,
    pub vocab: usize,
}

impl FlopsModel {
    pub fn of(config: &ModelConfig) -> Self {
        Self {
            num_layers: config.num_hidden_layers,
            block_macs_per_token: config.block_macs_per_token(),
            attention_width: config.num_attention_heads * config.head_dim,
            hidden: config.hidden_size,
            vocab: config.vocab_size,
        }
    }

    pub fn layer_flops(&self, tokens: usize, context: usize) -> f64 {
        2.0 * (self.block_macs_per_token * tokens) as f64
            + 4.0 * (tokens * context * self.attention_width) as f64
    }

    pub fn head_flops(&self, ids: usize) -> f64 {
        2.0 * (self.hidden * ids) as f64
    }

    pub fn pass_flops(&self, p: &PassCost) -> f64 {
        p.layers_run as f64 * self.layer_flops(p.tokens, p.context)
            + p.probes as f64 * self.head_flops(p.probe_width)
            + self.head_flops(self.vocab)
    }

    /// The same pass run densely: every layer, no probe.
    pub fn dense_flops(&self, p: &PassCost) -> f64 {
        self.pass_flops(&PassCost {
            layers_run: self.num_layers,
            probes: 0,
            ..*p
        })
    }

    /// Σ arm FLOPs / Σ dense FLOPs over the same passes.
    pub fn ratio(&self, passes: &[PassCost]) -> f64 {
        let dense: f64 = passes.iter().map(|p| self.dense_flops(p)).sum();
        if dense == 0.0 {
            return 0.0;
        }
        passes.iter().map(|p| self.pass_flops(p)).sum::<f64>() / dense
    }
}

/// SQuAD normalisation: lower case, drop punctuation and the articles a/an/the, squeeze spaces.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punct: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    no_punct
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// 1.0 if the prediction equals any gold answer after normalisation.
pub fn exact_match(prediction: &str, golds: &[String]) -> f64 {
    let p = normalize_answer(prediction);
    let hit = golds.iter().any(|g| normalize_answer(g) == p);
    if hit {
        1.0
    } else {
        0.0
    }
}

/// Best token-overlap F1 of the prediction against the gold answers.
pub fn f1(prediction: &str, golds: &[String]) -> f64 {
    golds
        .iter()
        .map(|g| f1_one(prediction, g))
        .fold(0.0, f64::max)
}

fn f1_one(prediction: &str, gold: &str) -> f64 {
    let p = normalize_answer(prediction);
    let g = normalize_answer(gold);
    let p: Vec<&str> = p.split_whitespace().collect();
    let g: Vec<&str> = g.split_whitespace().collect();
    if p.is_empty() || g.is_empty() {
        return if p == g { 1.0 } else { 0.0 };
    }
    let mut counts = std::collections::HashMap::new();
    for w in &g {
        *counts.entry(*w).or_insert(0usize) += 1;
    }
    let mut common = 0usize;
    for w in &p {
        if let Some(c) = counts.get_mut(w) {
            if *c > 0 {
                *c -= 1;
                common += 1;
            }
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / p.len() as f64;
    let recall = common as f64 / g.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn layer_statistics_by_hand() {
        // Exits at 2, 4, 12, 6 of 12 layers: mean 6, deviations −4 −2 6 0 → variance 56/4 = 14.
        let layers = [2.0, 4.0, 12.0, 6.0];
        close(mean(&layers), 6.0);
        close(variance(&layers), 14.0);
        close(pruning_ratio(6.0, 12), 0.5);
        close(pruning_ratio(12.0, 12), 0.0);
        close(accuracy(&[true, false, true, true]), 0.75);
        close(agreement(&[1, 2, 3, 4], &[1, 2, 0, 4]), 0.75);
        close(variance(&[]), 0.0);
    }

    /// Two layers, hidden 2, MLP 4, 1 head of width 2, vocabulary 3: block MACs per token =
    /// 2·2 + 2·2·2 + 2·2 + 3·2·4 = 40.
    fn toy() -> FlopsModel {
        FlopsModel {
            num_layers: 2,
            block_macs_per_token: 40,
            attention_width: 2,
            hidden: 2,
            vocab: 3,
        }
    }

    #[test]
    fn flops_of_a_pass_by_hand() {
        let m = toy();
        // 3 tokens, no cache: a layer = 2·40·3 + 4·3·3·2 = 240 + 72 = 312; head = 2·2·3 = 12.
        close(m.layer_flops(3, 3), 312.0);
        let dense = PassCost {
            tokens: 3,
            context: 3,
            layers_run: 2,
            probes: 0,
            probe_width: 3,
        };
        close(m.pass_flops(&dense), 2.0 * 312.0 + 12.0);
        // Exit after layer 1, having probed once over the full vocabulary: 312 + 12 + 12.
        let early = PassCost {
            layers_run: 1,
            probes: 1,
            ..dense
        };
        close(m.pass_flops(&early), 336.0);
        close(m.ratio(&[early]), 336.0 / 636.0);
        close(m.ratio(&[dense, early]), (636.0 + 336.0) / 1272.0);
        // A decode step: 1 token attending to 4 positions = 2·40 + 4·4·2 = 112 per layer.
        close(m.layer_flops(1, 4), 112.0);
    }

    #[test]
    fn squad_normalisation_em_and_f1() {
        assert_eq!(normalize_answer("The  Denver Broncos!"), "denver broncos");
        let golds = vec!["Denver Broncos".to_string(), "the Broncos".to_string()];
        close(exact_match("denver broncos.", &golds), 1.0);
        close(exact_match("Broncos", &golds), 1.0);
        close(exact_match("Denver", &golds), 0.0);
        // "Denver Broncos won": P = 2/3, R = 1 → F1 = 0.8 against the first gold.
        close(f1("Denver Broncos won", &golds), 0.8);
        // "the Carolina Panthers" vs either gold: no common token.
        close(f1("the Carolina Panthers", &golds), 0.0);
        // Repeated tokens count once per gold occurrence: "a b b" vs "b c" → P 1/2... after
        // normalisation "a" is dropped: ["b","b"] vs ["b","c"] → common 1, P 1/2, R 1/2, F1 1/2.
        close(f1("a b b", &["b c".to_string()]), 0.5);
        close(f1("", &["".to_string()]), 1.0);
    }
}
