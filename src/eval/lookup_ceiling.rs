//! How fast prompt-lookup decoding could at best be on a workload, from dense's own text.
//!
//! Greedy speculation settles exactly dense's tokens, so which drafts would be kept is known once
//! dense has answered: replay each answer round by round, look the draft up as
//! [`generate_prompt_lookup`](crate::engine::lookup_decode::generate_prompt_lookup) does, and
//! count the tokens each pass settles. Priced with the measured cost of a pass of r rows (against
//! one row, i.e. one dense step), that bounds what any draft-length controller can reach:
//! - *fixed k*: every round verifies the whole draft (up to k tokens), as `prompt_lookup/k=K`;
//! - *oracle*: every round verifies exactly the drafts that will be kept — no controller that
//!   decides before verifying can do better with these drafts.
//!
//! The bound leaves out what a real run also pays (drafting, sampling, the cost of a pass growing
//! with the context), so a measured speedup sits at or below it.

use super::bench_decode::{ratio, VerifyCost};
use crate::engine::ngram_draft::propose;
use anyhow::{bail, Result};
use serde::Serialize;

/// One draft budget's ceiling over a workload.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LookupCeiling {
    /// At most this many drafts per round.
    pub max_drafts: usize,
    /// Tokens each pass settles (the same rounds whichever drafts are verified).
    pub tokens_per_pass: f64,
    /// Dense steps per token over these passes' cost, when every round verifies its whole draft.
    pub fixed_speedup_bound: f64,
    /// The same when every round verifies only the drafts that will be kept.
    pub oracle_speedup_bound: f64,
}

/// The ceilings for 1..=`max_drafts` drafts per round. `answers[i]` is dense's greedy output for
/// `prompts[i]` (its first token comes from the prompt pass, as in decoding); `costs` are pass
/// costs of 1..=`max_drafts + 1` rows. Tokens count the answer's end as one.
pub fn lookup_ceilings(
    prompts: &[Vec<u32>],
    answers: &[Vec<u32>],
    max_ngram: usize,
    max_drafts: usize,
    costs: &[VerifyCost],
) -> Result<Vec<LookupCeiling>> {
    if prompts.len() != answers.len() {
        bail!("{} prompts but {} answers", prompts.len(), answers.len());
    }
    if costs.len() < max_drafts + 1 {
        bail!(
            "the ceiling for {max_drafts} drafts needs the cost of passes up to {} rows, {} measured",
            max_drafts + 1,
            costs.len()
        );
    }
    // A pass of more rows is never cheaper: a measured dip is noise, priced at the dearer one.
    // `priced[r - 1]` is a pass of r rows.
    let priced: Vec<f64> = costs
        .iter()
        .scan(0.0, |dearest: &mut f64, c| {
            *dearest = dearest.max(c.vs_one_row);
            Some(*dearest)
        })
        .collect();
    let cost = |rows: usize| priced[rows - 1];
    Ok((1..=max_drafts)
        .map(|k| {
            let (mut tokens, mut passes) = (0usize, 0usize);
            let (mut fixed_cost, mut oracle_cost) = (0.0, 0.0);
            for (prompt, answer) in prompts.iter().zip(answers) {
                for round in replay(prompt, answer, max_ngram, k) {
                    tokens += round.kept + 1;
                    passes += 1;
                    fixed_cost += cost(round.drafted + 1);
                    oracle_cost += cost(round.kept + 1);
                }
            }
            // Settling `tokens` tokens densely costs `tokens` one-row steps.
            LookupCeiling {
                max_drafts: k,
                tokens_per_pass: ratio(tokens as f64, passes as f64),
                fixed_speedup_bound: ratio(tokens as f64, fixed_cost),
                oracle_speedup_bound: ratio(tokens as f64, oracle_cost),
            }
        })
        .collect())
}

/// One verification round: drafts offered (≤ k) and how many of them dense's text keeps; the
/// pass settles those and one token of its own.
#[derive(Debug, PartialEq, Eq)]
struct Round {
    drafted: usize,
    kept: usize,
}

/// The rounds that decode `answer` after `prompt`: the first token is the prompt pass's, then
/// each round looks a draft up in everything settled and keeps its prefix that matches. The
/// answer's end (its stop token) is one more token no draft predicts, so dense and speculation
/// both pay the pass that produces it.
fn replay(prompt: &[u32], answer: &[u32], max_ngram: usize, k: usize) -> Vec<Round> {
    let mut rounds = Vec::new();
    let Some(&first) = answer.first() else {
        return rounds;
    };
    let mut history: Vec<u32> = prompt.to_vec();
    history.push(first);
    let mut at = 1; // answer[..at] is settled; at == answer.len() leaves only the end
    while at <= answer.len() {
        let draft = propose(&history, max_ngram, k).map_or(&[][..], |d| d.tokens);
        let kept = draft
            .iter()
            .zip(&answer[at..])
            .take_while(|(d, t)| d == t)
            .count();
        rounds.push(Round {
            drafted: draft.len(),
            kept,
        });
        let settled = (kept + 1).min(answer.len() - at);
        history.extend_from_slice(&answer[at..at + settled]);
        at += kept + 1;
    }
    rounds
}

/// The ceilings as a Markdown table.
pub fn ceiling_table(ceilings: &[LookupCeiling]) -> String {
    let mut out = String::from(
        "| drafts per round, at most | tokens per pass | speed bound, whole drafts verified | \
         speed bound, only kept drafts verified |\n|---|---|---|---|\n",
    );
    for c in ceilings {
        out.push_str(&format!(
            "| {} | {:.2} | {:.2}× | {:.2}× |\n",
            c.max_drafts, c.tokens_per_pass, c.fixed_speedup_bound, c.oracle_speedup_bound
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn costs(per_extra_row: f64, rows: usize) -> Vec<VerifyCost> {
        (1..=rows)
            .map(|r| VerifyCost {
                rows: r,
                seconds: 0.0,
                vs_one_row: 1.0 + per_extra_row * (r - 1) as f64,
            })
            .collect()
    }

    #[test]
    fn an_answer_that_copies_the_prompt_settles_in_one_pass() {
        // First token 1 from the prompt pass; "1" recurs, so [2, 3, 4] is drafted and kept.
        let rounds = replay(&[1, 2, 3, 4, 5], &[1, 2, 3, 4, 9], 3, 3);
        // Then "… 4 9" recurs nowhere: the end comes from a plain pass.
        assert_eq!(
            rounds,
            vec![
                Round {
                    drafted: 3,
                    kept: 3
                },
                Round {
                    drafted: 0,
                    kept: 0
                }
            ]
        );
        let c = lookup_ceilings(
            &[vec![1, 2, 3, 4, 5]],
            &[vec![1, 2, 3, 4, 9]],
            3,
            3,
            &costs(0.5, 4),
        )
        .unwrap();
        // k = 3: a pass of 4 rows settles 2, 3, 4, 9, a plain one the end: 5 tokens, 3.5 steps.
        assert_eq!(c[2].tokens_per_pass, 2.5);
        assert!((c[2].fixed_speedup_bound - 5.0 / 3.5).abs() < 1e-12);
        // k = 1: rounds settle (2, 3), (4, 9), the end: 2 passes of 2 rows and a plain one.
        assert!((c[0].tokens_per_pass - 5.0 / 3.0).abs() < 1e-12);
        assert!((c[0].oracle_speedup_bound - 5.0 / 4.0).abs() < 1e-12);
    }

    #[test]
    fn wrong_drafts_cost_the_whole_draft_but_not_the_oracle() {
        // Nothing the answer says follows its n-grams in the prompt: every draft is rejected.
        let prompt = vec![7, 8, 9, 7, 5];
        let answer = vec![7, 6, 4, 3];
        let c = lookup_ceilings(&[prompt], &[answer], 2, 2, &costs(0.25, 3)).unwrap();
        let k2 = &c[1];
        // Round 1 drafts 5, 7 (after the prompt's "7") where dense says 6; then nothing recurs.
        assert_eq!(
            replay(&[7, 8, 9, 7, 5], &[7, 6, 4, 3], 2, 2)
                .iter()
                .map(|r| (r.drafted, r.kept))
                .collect::<Vec<_>>(),
            vec![(2, 0), (0, 0), (0, 0), (0, 0)]
        );
        assert_eq!(k2.tokens_per_pass, 1.0);
        // The oracle verifies nothing and so costs dense's steps; whole drafts cost more.
        assert_eq!(k2.oracle_speedup_bound, 1.0);
        assert!(k2.fixed_speedup_bound < 1.0, "{k2:?}");
    }

    #[test]
    fn a_cheaper_measurement_of_more_rows_is_priced_as_the_dearer_one() {
        let mut c = costs(0.5, 3);
        // 3 rows measured below 2 rows' 1.5: noise.
        c[2].vs_one_row = 1.2;
        // One pass of 3 rows keeps both drafts (2, 3) and gives the end: 3 tokens at 1.5 steps.
        let ceiling = lookup_ceilings(&[vec![1, 2, 3]], &[vec![1, 2, 3]], 1, 2, &c).unwrap();
        assert!(
            (ceiling[1].oracle_speedup_bound - 3.0 / 1.5).abs() < 1e-12,
            "{ceiling:?}"
        );
    }

    #[test]
    fn too_few_measured_costs_are_refused() {
        let e = lookup_ceilings(&[vec![1]], &[vec![1]], 3, 4, &costs(0.3, 3)).unwrap_err();
        assert!(e.to_string().contains("up to 5 rows, 3 measured"), "{e}");
    }
}
