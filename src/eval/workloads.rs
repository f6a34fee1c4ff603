//! Decode workloads for `bench-decode`: user messages that differ in how much the answer copies
//! its context — where prompt-lookup drafts are right, and where they cannot be.
//!
//! | workload | message | the answer |
//! |---|---|---|
//! | `squad` | a SQuAD dev passage, its first question, "answer with a quote" | extractive: copies a span |
//! | `rewrite` | "rewrite this paragraph with one change" over a SQuAD passage | copies nearly all of it |
//! | `chat` | open questions with no context | nothing to copy |
//!
//! Passages are every 17th distinct paragraph of SQuAD v1.1 dev, so they come from many
//! articles rather than the first one's 54 paragraphs.

use super::tasks::{load_examples, Split, Task};
use anyhow::{bail, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Squad,
    Rewrite,
    Chat,
}

impl Workload {
    pub const ALL: [Workload; 3] = [Self::Squad, Self::Rewrite, Self::Chat];

    pub fn name(self) -> &'static str {
        match self {
            Self::Squad => "squad",
            Self::Rewrite => "rewrite",
            Self::Chat => "chat",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        match Self::ALL.into_iter().find(|w| w.name() == name) {
            Some(w) => Ok(w),
            None => bail!("unknown workload {name:?}: expected squad, rewrite or chat"),
        }
    }

    /// What the table says about it.
    pub fn description(self) -> &'static str {
        match self {
            Self::Squad => "SQuAD dev passage + question, answer quoted from the passage",
            Self::Rewrite => "rewrite a SQuAD dev paragraph with one change",
            Self::Chat => "open chat prompts (nothing to copy)",
        }
    }

    /// `n` user messages (chat cycles through its prompts when `n` is larger).
    pub fn messages(self, n: usize) -> Result<Vec<String>> {
        Ok(match self {
            Self::Squad => passages(n)?
                .into_iter()
                .map(|(context, question)| {
                    format!(
                        "{context}\n\nQuestion: {question}\nQuote the sentence of the passage that answers the question."
                    )
                })
                .collect(),
            Self::Rewrite => passages(n)?
                .into_iter()
                .map(|(context, _)| {
                    let word = context
                        .split_whitespace()
                        .skip(1)
                        .find(|w| w.len() >= 5 && w.chars().all(char::is_alphabetic))
                        .unwrap_or("the");
                    format!(
                        "Rewrite this paragraph with one change: replace \"{word}\" with \
                         \"{}\".\n\n{context}",
                        word.to_uppercase()
                    )
                })
                .collect(),
            Self::Chat => OPEN_PROMPTS
                .iter()
                .cycle()
                .take(n)
                .map(|p| p.to_string())
                .collect(),
        })
    }
}

const OPEN_PROMPTS: [&str; 8] = [
    "Write a short poem about the sea.",
    "What are three tips for staying healthy?",
    "Explain why the sky is blue.",
    "Tell me a story about a brave mouse.",
    "What is the difference between a cat and a dog?",
    "Give me some ideas for a birthday party.",
    "How do I start learning to cook?",
    "Describe your favourite season and why you like it.",
];

/// (passage, its first question) for `n` passages spread over SQuAD dev.
fn passages(n: usize) -> Result<Vec<(String, String)>> {
    let mut seen = std::collections::HashSet::new();
    let mut distinct = Vec::new();
    for example in load_examples(Task::Squad, Split::Test, None)? {
        // The task's text is the passage, a newline, the question.
        let Some((context, question)) = example.text.rsplit_once('\n') else {
            continue;
        };
        if seen.insert(context.to_string()) {
            distinct.push((context.to_string(), question.to_string()));
        }
    }
    let picked: Vec<_> = distinct.into_iter().step_by(17).take(n).collect();
    if picked.len() < n {
        bail!("SQuAD dev has only {} passages 17 apart", picked.len());
    }
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_build_distinct_messages_that_carry_their_passage() {
        let squad = Workload::Squad.messages(3).unwrap();
        let rewrite = Workload::Rewrite.messages(3).unwrap();
        assert_eq!((squad.len(), rewrite.len()), (3, 3));
        assert_ne!(squad[0], squad[1]);
        assert!(squad[0].contains("Question: ") && squad[0].ends_with("answers the question."));
        // The rewrite keeps the same passages, whole.
        let passage = squad[0].split("\n\nQuestion: ").next().unwrap();
        assert!(rewrite[0].ends_with(passage), "{}", rewrite[0]);
        assert_eq!(Workload::Chat.messages(10).unwrap()[8], OPEN_PROMPTS[0]);
        assert!(Workload::parse("poems")
            .unwrap_err()
            .to_string()
            .contains("squad"));
    }
}
