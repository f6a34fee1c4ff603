//! Turn an [`AbRun`] into the per-arm numbers and print them as JSON or a Markdown table.

use super::ab::{AbRun, Answer, Case, CaseOutcome};
use super::metrics::{self, FlopsModel};
use serde::Serialize;
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Serialize)]
pub struct ArmReport {
    /// Exact match for generative tasks.
    pub accuracy: f64,
    pub avg_layers: f64,
    pub layers_variance: f64,
    pub pruning_ratio: f64,
    pub flops_ratio: f64,
    /// Seconds in forward passes; `None` for the analysis-only oracle.
    pub wall_s: Option<f64>,
    /// Dense wall-clock / this arm's (needs a dense arm).
    pub speedup: Option<f64>,
    pub agreement_with_dense: Option<f64>,
    /// SQuAD token F1 (generative tasks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    /// Prompts whose first pass stopped before the last layer.
    pub early_exits: usize,
    /// How many prompts activated 1, 2, …, L layers (rounded for generated answers).
    pub layers_histogram: Vec<usize>,
}

/// The whole run, as `eval` prints it.
#[derive(Debug, Clone)]
pub struct EvalReport {
    pub task: String,
    pub shots: usize,
    pub prompt_format: String,
    pub examples: usize,
    pub num_layers: usize,
    pub scoring: String,
    pub arms: Vec<(String, ArmReport)>,
    /// Accuracy if every prompt exited at layer 1, 2, …, L (paper Fig. 1; oracle runs only).
    pub accuracy_by_layer: Option<Vec<f64>>,
    /// Whether dense is competent here (classification runs with a dense arm).
    pub competence: Option<super::competence::Competence>,
}

fn correct(case: &Case, answer: &Answer) -> bool {
    match answer {
        Answer::Token(t) => case.gold == Some(*t),
        Answer::Text(s) => metrics::exact_match(s, &case.example.answers) == 1.0,
    }
}

/// Summarise every arm of `run` over `cases`.
pub fn summarise(run: &AbRun, cases: &[Case], flops: &FlopsModel) -> Vec<(String, ArmReport)> {
    let dense = run
        .arm_names
        .iter()
        .position(|n| n == "dense")
        .map(|i| &run.outcomes[i]);
    let dense_answers: Option<Vec<&Answer>> = dense.map(|d| d.iter().map(|o| &o.answer).collect());
    let dense_wall: Option<f64> = dense.map(|d| d.iter().map(|o| o.seconds).sum());
    run.arm_names
        .iter()
        .zip(&run.outcomes)
        .map(|(name, outs)| {
            let oracle = outs.iter().any(|o| o.trace.is_some());
            let report = arm_report(
                outs,
                cases,
                flops,
                oracle,
                dense_answers.as_deref(),
                dense_wall,
            );
            (name.clone(), report)
        })
        .collect()
}

fn arm_report(
    outs: &[CaseOutcome],
    cases: &[Case],
    flops: &FlopsModel,
    analysis_only: bool,
    dense_answers: Option<&[&Answer]>,
    dense_wall: Option<f64>,
) -> ArmReport {
    let hits: Vec<bool> = outs
        .iter()
        .zip(cases)
        .map(|(o, c)| correct(c, &o.answer))
        .collect();
    let layers: Vec<f64> = outs.iter().map(|o| o.layers).collect();
    let avg_layers = metrics::mean(&layers);
    let passes: Vec<_> = outs.iter().flat_map(|o| o.passes.iter().copied()).collect();
    let wall: f64 = outs.iter().map(|o| o.seconds).sum();
    let wall_s = (!analysis_only).then_some(wall);
    let answers: Vec<&Answer> = outs.iter().map(|o| &o.answer).collect();
    let f1 = match outs.first().map(|o| &o.answer) {
        Some(Answer::Text(_)) => {
            let scores: Vec<f64> = outs
                .iter()
                .zip(cases)
                .map(|(o, c)| match &o.answer {
                    Answer::Text(s) => metrics::f1(s, &c.example.answers),
                    Answer::Token(_) => 0.0,
                })
                .collect();
            Some(metrics::mean(&scores))
        }
        _ => None,
    };
    let mut layers_histogram = vec![0usize; flops.num_layers];
    for l in &layers {
        let bin = (l.round() as usize).clamp(1, flops.num_layers.max(1));
        if let Some(b) = layers_histogram.get_mut(bin - 1) {
            *b += 1;
        }
    }
    ArmReport {
        accuracy: metrics::accuracy(&hits),
        avg_layers,
        layers_variance: metrics::variance(&layers),
        pruning_ratio: metrics::pruning_ratio(avg_layers, flops.num_layers),
        flops_ratio: flops.ratio(&passes),
        speedup: match (wall_s, dense_wall) {
            (Some(w), Some(d)) if w > 0.0 => Some(d / w),
            _ => None,
        },
        wall_s,
        agreement_with_dense: dense_answers.map(|d| metrics::agreement(&answers, d)),
        f1,
        early_exits: outs.iter().filter(|o| o.exit_layer.is_some()).count(),
        layers_histogram,
    }
}

/// Accuracy of answering at each layer, from the oracle's lens traces.
pub fn accuracy_by_layer(run: &AbRun, cases: &[Case]) -> Option<Vec<f64>> {
    let outs = run
        .outcomes
        .iter()
        .find(|outs| outs.iter().any(|o| o.trace.is_some()))?;
    let num_layers = outs
        .iter()
        .filter_map(|o| o.trace.as_ref())
        .map(|t| t.answers.len())
        .max()?;
    let per_layer = (0..num_layers)
        .map(|l| {
            let hits: Vec<bool> = outs
                .iter()
                .zip(cases)
                .filter_map(|(o, c)| {
                    let t = o.trace.as_ref()?.answers.get(l)?;
                    c.gold.map(|g| g == *t)
                })
                .collect();
            metrics::accuracy(&hits)
        })
        .collect();
    Some(per_layer)
}

impl EvalReport {
    pub fn to_json(&self) -> Value {
        let mut arms = Map::new();
        for (name, report) in &self.arms {
            arms.insert(
                name.clone(),
                serde_json::to_value(report).unwrap_or(Value::Null),
            );
        }
        let mut doc = json!({
            "task": self.task,
            "shots": self.shots,
            "prompt_format": self.prompt_format,
            "examples": self.examples,
            "num_layers": self.num_layers,
            "scoring": self.scoring,
            "arms": arms,
        });
        if let Some(acc) = &self.accuracy_by_layer {
            doc["accuracy_by_layer"] = json!(acc);
        }
        if let Some(c) = &self.competence {
            doc["competence"] = serde_json::to_value(c).unwrap_or(Value::Null);
        }
        doc
    }

    pub fn to_markdown(&self) -> String {
        let pct = |x: f64| format!("{:.1}%", 100.0 * x);
        let opt = |x: Option<f64>, f: &dyn Fn(f64) -> String| x.map_or("–".to_string(), f);
        let mut s = format!(
            "{} ({}-shot, {} prompts, {} examples, {} layers, scoring {})\n\n",
            self.task, self.shots, self.prompt_format, self.examples, self.num_layers, self.scoring
        );
        if let Some(c) = &self.competence {
            s.push_str(&format!("{}\n\n", c.line()));
        }
        s.push_str("| arm | accuracy | avg layers (var) | pruning ratio | FLOPs ratio | wall s | speedup | agreement with dense |\n");
        s.push_str("|---|---|---|---|---|---|---|---|\n");
        for (name, r) in &self.arms {
            let accuracy = match r.f1 {
                Some(f1) => format!("EM {} / F1 {}", pct(r.accuracy), pct(f1)),
                None => pct(r.accuracy),
            };
            s.push_str(&format!(
                "| {name} | {accuracy} | {:.2} ({:.2}) | {} | {:.3} | {} | {} | {} |\n",
                r.avg_layers,
                r.layers_variance,
                pct(r.pruning_ratio),
                r.flops_ratio,
                opt(r.wall_s, &|w| format!("{w:.2}")),
                opt(r.speedup, &|x| format!("{x:.2}×")),
                opt(r.agreement_with_dense, &|a| pct(a)),
            ));
        }
        if let Some(acc) = &self.accuracy_by_layer {
            let row: Vec<String> = acc.iter().map(|a| format!("{:.1}", 100.0 * a)).collect();
            s.push_str(&format!(
                "\naccuracy by exit layer 1 → {}: {}\n",
                acc.len(),
                row.join(" ")
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::ab::{AbRun, Case};
    use crate::eval::metrics::PassCost;
    use crate::eval::tasks::Example;

    fn case(gold: u32) -> Case {
        Case {
            example: Example::new("0".into(), "x".into(), "y".into()),
            tokens: vec![1, 2],
            gold: Some(gold),
        }
    }

    fn outcome(answer: u32, layers: usize, seconds: f64) -> CaseOutcome {
        CaseOutcome {
            answer: Answer::Token(answer),
            layers: layers as f64,
            exit_layer: (layers < 4).then_some(layers),
            passes: vec![PassCost {
                tokens: 2,
                context: 2,
                layers_run: layers,
                probes: 0,
                probe_width: 0,
            }],
            seconds,
            trace: None,
        }
    }

    #[test]
    fn arm_numbers_by_hand() {
        let flops = FlopsModel {
            num_layers: 4,
            block_macs_per_token: 10,
            attention_width: 1,
            hidden: 1,
            vocab: 1,
        };
        let cases = [case(7), case(8)];
        let run = AbRun {
            arm_names: vec!["dense".into(), "early".into()],
            outcomes: vec![
                vec![outcome(7, 4, 3.0), outcome(9, 4, 1.0)],
                vec![outcome(7, 1, 0.5), outcome(8, 3, 1.5)],
            ],
        };
        let arms = summarise(&run, &cases, &flops);
        let (name, early) = &arms[1];
        assert_eq!(name, "early");
        assert_eq!(early.accuracy, 1.0);
        assert_eq!(arms[0].1.accuracy, 0.5);
        assert_eq!(early.avg_layers, 2.0);
        assert_eq!(early.layers_variance, 1.0);
        assert_eq!(early.pruning_ratio, 0.5);
        assert_eq!(early.wall_s, Some(2.0));
        assert_eq!(early.speedup, Some(2.0));
        assert_eq!(early.agreement_with_dense, Some(0.5));
        assert_eq!(early.early_exits, 2);
        assert_eq!(early.layers_histogram, vec![1, 0, 1, 0]);
        // Per pass: a layer = 2·10·2 + 4·2·2·1 = 56, the head 2. Early: (56+2)+(168+2) over 2·(224+2).
        assert!((early.flops_ratio - 228.0 / 452.0).abs() < 1e-12);
        let json = EvalReport {
            task: "sst2".into(),
            shots: 0,
            prompt_format: "qa".into(),
            examples: 2,
            num_layers: 4,
            scoring: "full_vocab".into(),
            arms,
            accuracy_by_layer: None,
            competence: None,
        }
        .to_json();
        assert_eq!(json["arms"]["early"]["speedup"], 2.0);
        assert_eq!(json["arms"]["dense"]["agreement_with_dense"], 1.0);
    }
}
