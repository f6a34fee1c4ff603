//! Recorded passes ([`PromptTrace`]s) kept in a file, so one set of dense passes serves every
//! rule, policy, feature set and budget `calibrate` is asked about (the paper's Tables 4 and 6
//! and the budget sweep on a real model cost one recording each, not one per row).
//!
//! A file is only used for the prompts it was recorded on: it keeps the model identity, the
//! scoring, and each prompt's example id and a hash of its tokens (which changes with the shots,
//! the demonstration draw and the prompt format); anything else is refused with what differs.
//! It may hold more features than a rule reads: each rule gets its own, by name.

use super::ab::{Case, Scoring};
use super::replay::PromptTrace;
use crate::engine::loader::Fnv;
use crate::engine::ModelIdentity;
use crate::plugin::classifier::write_atomically;
use crate::plugin::features::FeatureRow;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceFile {
    format: u32,
    identity: ModelIdentity,
    /// The label tokens answers were scored among; `None`: the full vocabulary.
    label_tokens: Option<Vec<u32>>,
    features: Vec<String>,
    /// Fingerprint of the exit heads the features and answers were read from (`None`: the lens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exit_heads: Option<String>,
    prompts: Vec<StoredPrompt>,
}

/// One prompt's pass. JSON has no NaN, so a NaN feature (a cosine of a zero vector) is `null`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredPrompt {
    id: String,
    tokens_hash: String,
    /// Per block: the features, in `features` order.
    values: Vec<Vec<Option<f32>>>,
    top1: Vec<u32>,
    top_prob: Vec<Option<f32>>,
    gap: Vec<Option<f32>>,
    answers: Vec<u32>,
}

/// FNV-1a over the token ids: equal prompts hash equal, and any change of text moves it.
fn tokens_hash(tokens: &[u32]) -> String {
    let mut h = Fnv::default();
    for t in tokens {
        h.write(&t.to_le_bytes());
    }
    format!("{:016x}", h.0)
}

fn label_tokens(scoring: &Scoring) -> Option<Vec<u32>> {
    match scoring {
        Scoring::Labels(ids) => Some(ids.clone()),
        Scoring::FullVocab => None,
    }
}

fn stored(x: f32) -> Option<f32> {
    x.is_finite().then_some(x)
}

fn restored(x: Option<f32>) -> f32 {
    x.unwrap_or(f32::NAN)
}

/// Write `traces` (recorded with `features`, read from the exit heads with fingerprint
/// `exit_heads` if any, on `cases`) to `path`.
pub fn save(
    path: &Path,
    identity: &ModelIdentity,
    scoring: &Scoring,
    features: &[String],
    exit_heads: Option<&str>,
    cases: &[Case],
    traces: &[PromptTrace],
) -> Result<()> {
    let prompts = cases
        .iter()
        .zip(traces)
        .map(|(case, t)| StoredPrompt {
            id: case.example.id.clone(),
            tokens_hash: tokens_hash(&case.tokens),
            values: t
                .rows
                .iter()
                .map(|r| r.values.iter().copied().map(stored).collect())
                .collect(),
            top1: t.rows.iter().map(|r| r.top1).collect(),
            top_prob: t.rows.iter().map(|r| stored(r.top_prob)).collect(),
            gap: t.rows.iter().map(|r| stored(r.gap)).collect(),
            answers: t.answers.clone(),
        })
        .collect();
    let file = TraceFile {
        format: FORMAT,
        identity: identity.clone(),
        label_tokens: label_tokens(scoring),
        features: features.to_vec(),
        exit_heads: exit_heads.map(str::to_string),
        prompts,
    };
    write_atomically(path, &serde_json::to_vec(&file)?)
}

/// Read the traces of `cases` from `path`, each row holding the features `wanted` in that order
/// (read from the exit heads with fingerprint `exit_heads`, if any).
pub fn load(
    path: &Path,
    identity: &ModelIdentity,
    scoring: &Scoring,
    wanted: &[String],
    exit_heads: Option<&str>,
    cases: &[Case],
) -> Result<Vec<PromptTrace>> {
    let name = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read traces {name}"))?;
    let file: TraceFile = serde_json::from_slice(&bytes)
        .with_context(|| format!("{name}: not a traces file written by `calibrate --traces`"))?;
    if file.format != FORMAT {
        bail!(
            "{name}: traces format {} (this build reads {FORMAT}); record again",
            file.format
        );
    }
    if &file.identity != identity {
        bail!(
            "{name} was recorded on another model ({} layers, weights {}); this one has {} layers, \
             weights {}: record again",
            file.identity.num_layers,
            file.identity.weights_fingerprint,
            identity.num_layers,
            identity.weights_fingerprint
        );
    }
    if file.label_tokens != label_tokens(scoring) {
        bail!(
            "{name} scored answers among {:?}, this run among {:?} (None: the full vocabulary)",
            file.label_tokens,
            label_tokens(scoring)
        );
    }
    if file.exit_heads.as_deref() != exit_heads {
        bail!(
            "{name} was recorded with exit heads {:?}, this run reads {:?} (None: the logit \
             lens): record again",
            file.exit_heads,
            exit_heads
        );
    }
    let columns = wanted
        .iter()
        .map(|w| {
            file.features.iter().position(|f| f == w).with_context(|| {
                format!("{name} has no feature {w:?} (it holds {:?})", file.features)
            })
        })
        .collect::<Result<Vec<usize>>>()?;
    if file.prompts.len() != cases.len() {
        bail!(
            "{name} holds {} prompts, this run has {}: record again (or match --limit)",
            file.prompts.len(),
            cases.len()
        );
    }
    let layers = identity.num_layers;
    cases
        .iter()
        .zip(file.prompts)
        .enumerate()
        .map(|(i, (case, p))| {
            if p.id != case.example.id || p.tokens_hash != tokens_hash(&case.tokens) {
                bail!(
                    "{name}: prompt {} was {:?}, this run's is {:?} (or its text differs: shots, \
                     seed or prompt format); record again",
                    i + 1,
                    p.id,
                    case.example.id
                );
            }
            let blocks = p.values.len();
            let lengths = [p.top1.len(), p.top_prob.len(), p.gap.len(), p.answers.len()];
            if blocks == 0 || blocks > layers || lengths.iter().any(|&l| l != blocks) {
                bail!("{name}: prompt {:?} holds a malformed pass", p.id);
            }
            let rows = (0..blocks)
                .map(|b| {
                    let values = &p.values[b];
                    if values.len() != file.features.len() {
                        bail!(
                            "{name}: prompt {:?} block {} has {} features",
                            p.id,
                            b + 1,
                            values.len()
                        );
                    }
                    Ok(FeatureRow {
                        layer: b + 1,
                        num_layers: layers,
                        values: columns.iter().map(|&c| restored(values[c])).collect(),
                        top1: p.top1[b],
                        top_prob: restored(p.top_prob[b]),
                        gap: restored(p.gap[b]),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(PromptTrace {
                rows,
                answers: p.answers,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::tasks::Example;

    fn identity() -> ModelIdentity {
        ModelIdentity {
            architecture: "llama".into(),
            num_layers: 2,
            hidden_size: 8,
            vocab_size: 10,
            weights_fingerprint: "00".into(),
        }
    }

    fn case(id: &str, tokens: &[u32]) -> Case {
        Case {
            example: Example {
                id: id.into(),
                text: String::new(),
                label_word: String::new(),
                group: None,
                answers: vec![],
            },
            tokens: tokens.to_vec(),
            gold: None,
        }
    }

    fn row(layer: usize, values: Vec<f32>) -> FeatureRow {
        FeatureRow {
            layer,
            num_layers: 2,
            values,
            top1: 3,
            top_prob: 0.5,
            gap: f32::NAN,
        }
    }

    #[test]
    fn passes_round_trip_with_nan_features_and_a_subset_by_name() {
        let dir = std::env::temp_dir().join(format!("adainfer-traces-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.json");
        let names: Vec<String> = ["gap", "cos_attn"].map(String::from).to_vec();
        let cases = [case("a", &[1, 2, 3])];
        let traces = [PromptTrace {
            rows: vec![row(1, vec![0.25, f32::NAN]), row(2, vec![0.75, 0.5])],
            answers: vec![4, 5],
        }];
        let scoring = Scoring::Labels(vec![4, 5]);
        save(&path, &identity(), &scoring, &names, None, &cases, &traces).unwrap();
        let back = load(
            &path,
            &identity(),
            &scoring,
            &["cos_attn".into()],
            None,
            &cases,
        )
        .unwrap();
        assert_eq!(back[0].answers, vec![4, 5]);
        assert!(back[0].rows[0].values[0].is_nan() && back[0].rows[0].gap.is_nan());
        assert_eq!(back[0].rows[1].values, vec![0.5]);
        assert_eq!((back[0].rows[1].layer, back[0].rows[1].top1), (2, 3));
        // Another token sequence under the same id is another prompt.
        let err = load(
            &path,
            &identity(),
            &scoring,
            &names,
            None,
            &[case("a", &[1, 2])],
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("record again"), "{err:#}");
        let err = load(
            &path,
            &identity(),
            &Scoring::FullVocab,
            &names,
            None,
            &cases,
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("scored answers among"),
            "{err:#}"
        );
        // Passes read through the logit lens are not those of a run with exit heads.
        let err = load(&path, &identity(), &scoring, &names, Some("00ff"), &cases).unwrap_err();
        assert!(format!("{err:#}").contains("exit heads"), "{err:#}");
        // A pass longer than the model, or with ragged rows, is refused, not indexed.
        let text = std::fs::read_to_string(&path).unwrap();
        let longer = text.replace("\"answers\":[4,5]", "\"answers\":[4,5,6]");
        std::fs::write(&path, longer).unwrap();
        let err = load(&path, &identity(), &scoring, &names, None, &cases).unwrap_err();
        assert!(format!("{err:#}").contains("malformed pass"), "{err:#}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
