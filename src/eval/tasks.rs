//! Evaluation tasks: which file each task reads, how an example becomes a prompt, and the
//! in-context demonstrations.
//!
//! Prompts follow the AdaInfer paper: `Q: {x}\nA: {y}\n\n` for each of the k demonstrations,
//! then `Q: {x}\nA:`. The answer follows `A:` after one space, so the gold token of a
//! classification task is its label word with a leading space (how the task model was trained).
//!
//! | task | test split (evaluated) | train split (demonstrations, calibration) | x | y |
//! |---|---|---|---|---|
//! | `sst2` | `sst2/dev.tsv` (872) | `sst2/train.tsv` | the sentence | `positive` / `negative` |
//! | `agnews` | `agnews/test.csv` (7,600) | `agnews/train_sample.csv` | `{title}. {description}`, `\` → space | `world` / `sports` / `business` / `science` |
//! | `mmlu` | `mmlu/test/*.csv` (14,042) | `mmlu/dev/*.csv` (5 per subject) | question, then `(A) … (B) … (C) … (D) …` on one line | the letter |
//! | `csqa` | `csqa/dev.jsonl` (1,221) | `csqa/train.jsonl` | stem, then `(A) … (E) …` on one line | the letter |
//! | `squad` | `squad/dev-v1.1.json` (10,570) | the same file (no train file is shipped) | context, newline, question | the first gold answer |
//!
//! Multiple choice is asked as letters so that every answer is one token and top-1 scoring
//! works as for the classification tasks. MMLU demonstrations come from the same subject
//! (the usual MMLU protocol). Demonstrations are one fixed draw per run (per subject for MMLU);
//! an evaluated example that is itself a demonstration (possible only for SQuAD) is dropped.

use super::datasets;
use anyhow::{bail, Context, Result};
use rand::{rngs::StdRng, SeedableRng};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
    Sst2,
    AgNews,
    Mmlu,
    Csqa,
    Squad,
}

impl Task {
    pub const ALL: [Task; 5] = [
        Task::Sst2,
        Task::AgNews,
        Task::Mmlu,
        Task::Csqa,
        Task::Squad,
    ];

    pub fn parse(name: &str) -> Result<Self> {
        Ok(
            match name.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
                "sst2" => Task::Sst2,
                "agnews" => Task::AgNews,
                "mmlu" => Task::Mmlu,
                "csqa" | "commonsenseqa" => Task::Csqa,
                "squad" => Task::Squad,
                _ => bail!("unknown task {name:?} (expected sst2, agnews, mmlu, csqa or squad)"),
            },
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            Task::Sst2 => "sst2",
            Task::AgNews => "agnews",
            Task::Mmlu => "mmlu",
            Task::Csqa => "csqa",
            Task::Squad => "squad",
        }
    }

    /// Every answer a classification task allows (without the leading space); empty for SQuAD.
    pub fn label_words(&self) -> &'static [&'static str] {
        match self {
            Task::Sst2 => &["positive", "negative"],
            Task::AgNews => &["world", "sports", "business", "science"],
            Task::Mmlu => &["A", "B", "C", "D"],
            Task::Csqa => &["A", "B", "C", "D", "E"],
            Task::Squad => &[],
        }
    }

    /// The instruction line a chat-form prompt opens with.
    pub fn instruction(&self) -> &'static str {
        match self {
            Task::Sst2 => "Is the sentiment of this movie review positive or negative? Answer with one word: positive or negative.",
            Task::AgNews => "What is this news article about? Answer with one word: world, sports, business or science.",
            Task::Mmlu => "Answer the multiple-choice question with the letter of the correct option: A, B, C or D.",
            Task::Csqa => "Answer the multiple-choice question with the letter of the correct option: A, B, C, D or E.",
            Task::Squad => "Answer the question with a short span copied from the context.",
        }
    }

    /// SQuAD answers are generated text scored by exact match / F1; the rest are one token.
    pub fn is_generative(&self) -> bool {
        matches!(self, Task::Squad)
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `Test` is the split a task is evaluated on; `Train` feeds demonstrations and calibration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "train" => Ok(Split::Train),
            "test" => Ok(Split::Test),
            _ => bail!("unknown split {name:?} (expected train or test; see eval::tasks for the files behind each)"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Stable id: the row number, the dataset's own id, or `subject/row` for MMLU.
    pub id: String,
    /// The `x` of the template, already stripped.
    pub text: String,
    /// The gold answer as it follows `A: ` (no leading space).
    pub label_word: String,
    /// Demonstrations are drawn within a group (the MMLU subject); `None` elsewhere.
    pub group: Option<String>,
    /// Every accepted answer (SQuAD has several); the first is `label_word`.
    pub answers: Vec<String>,
}

impl Example {
    pub fn new(id: String, text: String, label_word: String) -> Self {
        Self {
            answers: vec![label_word.clone()],
            id,
            text,
            label_word,
            group: None,
        }
    }
}

/// `../shared/data` beside the checkout, or `$ADAINFER_DATA`.
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os("ADAINFER_DATA") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
    }
}

/// The first `limit` examples (file order) of a split, from [`default_data_dir`].
pub fn load_examples(task: Task, split: Split, limit: Option<usize>) -> Result<Vec<Example>> {
    load_examples_from(&default_data_dir(), task, split, limit)
}

pub fn load_examples_from(
    data_dir: &Path,
    task: Task,
    split: Split,
    limit: Option<usize>,
) -> Result<Vec<Example>> {
    let mut examples = datasets::read(data_dir, task, split).with_context(|| {
        format!(
            "cannot load {task} ({split:?} split) from {}",
            data_dir.display()
        )
    })?;
    if let Some(limit) = limit {
        examples.truncate(limit);
    }
    Ok(examples)
}

/// The query part of a prompt: `Q: {x}\nA:`.
pub fn prompt(example: &Example) -> String {
    format!("Q: {}\nA:", example.text)
}

/// One solved demonstration: `Q: {x}\nA: {y}\n\n`.
pub fn demonstration(example: &Example) -> String {
    format!("Q: {}\nA: {}\n\n", example.text, example.label_word)
}

/// The text of an answer as the model writes it after `A:`.
pub fn answer_text(label_word: &str) -> String {
    format!(" {label_word}")
}

/// k demonstrations drawn once with a fixed seed (per group), prepended to every query.
#[derive(Debug, Clone, Default)]
pub struct FewShot {
    by_group: BTreeMap<Option<String>, Vec<Example>>,
    ids: HashSet<String>,
}

impl FewShot {
    /// No demonstrations: 0-shot prompts.
    pub fn none() -> Self {
        Self::default()
    }

    /// Draw `k` demonstrations per group from `pool` with `seed`. A group with fewer than `k`
    /// rows is an error naming it.
    pub fn draw(pool: &[Example], k: usize, seed: u64) -> Result<Self> {
        let mut few = Self::none();
        if k == 0 {
            return Ok(few);
        }
        let mut groups: BTreeMap<Option<String>, Vec<&Example>> = BTreeMap::new();
        for ex in pool {
            groups.entry(ex.group.clone()).or_default().push(ex);
        }
        let mut rng = StdRng::seed_from_u64(seed);
        for (group, rows) in groups {
            if rows.len() < k {
                bail!(
                    "{k} demonstrations requested but group {:?} has only {} rows",
                    group.as_deref().unwrap_or("(all)"),
                    rows.len()
                );
            }
            let picked = rand::seq::index::sample(&mut rng, rows.len(), k);
            let mut demos = Vec::with_capacity(k);
            for i in picked.iter() {
                demos.push(rows[i].clone());
                few.ids.insert(rows[i].id.clone());
            }
            few.by_group.insert(group, demos);
        }
        Ok(few)
    }

    /// The demonstrations shown with `example` (those of its group).
    pub fn demonstrations(&self, example: &Example) -> &[Example] {
        self.by_group.get(&example.group).map_or(&[], Vec::as_slice)
    }

    /// Demonstrations for `example`'s group, then its query.
    pub fn prompt(&self, example: &Example) -> String {
        let demos: String = self
            .demonstrations(example)
            .iter()
            .map(demonstration)
            .collect();
        format!("{demos}{}", prompt(example))
    }

    /// Whether `example` is one of the demonstrations (it must not be evaluated then).
    pub fn contains(&self, example: &Example) -> bool {
        self.ids.contains(&example.id)
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(id: &str, group: Option<&str>) -> Example {
        let mut e = Example::new(id.into(), format!("text {id}"), "yes".into());
        e.group = group.map(Into::into);
        e
    }

    #[test]
    fn prompt_matches_the_paper_template() {
        let e = Example::new("0".into(), "a fine film".into(), "positive".into());
        assert_eq!(prompt(&e), "Q: a fine film\nA:");
        assert_eq!(demonstration(&e), "Q: a fine film\nA: positive\n\n");
        assert_eq!(FewShot::none().prompt(&e), "Q: a fine film\nA:");
    }

    #[test]
    fn few_shot_draw_is_seeded_and_per_group() {
        let pool: Vec<Example> = (0..10)
            .map(|i| ex(&i.to_string(), Some(if i < 5 { "g1" } else { "g2" })))
            .collect();
        let a = FewShot::draw(&pool, 2, 7).unwrap();
        let b = FewShot::draw(&pool, 2, 7).unwrap();
        assert_eq!(a.by_group, b.by_group);
        assert_eq!(a.len(), 4);
        let query = ex("q", Some("g2"));
        let p = a.prompt(&query);
        assert_eq!(p.matches("Q: ").count(), 3);
        assert!(p.ends_with("Q: text q\nA:"));
        // The g2 demonstrations come from rows 5..10 only.
        for line in p
            .lines()
            .filter(|l| l.starts_with("Q: text ") && *l != "Q: text q")
        {
            let n: usize = line["Q: text ".len()..].parse().unwrap();
            assert!(n >= 5, "{line}");
        }
        assert!(FewShot::draw(&pool, 6, 7).is_err());
    }

    #[test]
    fn task_names_parse_back() {
        for t in Task::ALL {
            assert_eq!(Task::parse(t.name()).unwrap(), t);
        }
        assert_eq!(Task::parse("AG_News").unwrap(), Task::AgNews);
        let err = Task::parse("imdb").unwrap_err().to_string();
        assert!(err.contains("imdb"), "{err}");
        assert!(Split::parse("dev").is_err());
    }
}
