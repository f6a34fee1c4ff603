//! Parsers for the benchmark files in `../shared/data` (layout in its README). Each returns the
//! examples of one split in file order; a malformed row is an error naming file and line.

use super::tasks::{Example, Split, Task};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub fn read(dir: &Path, task: Task, split: Split) -> Result<Vec<Example>> {
    match (task, split) {
        (Task::Sst2, Split::Test) => sst2(&dir.join("sst2/dev.tsv")),
        (Task::Sst2, Split::Train) => sst2(&dir.join("sst2/train.tsv")),
        (Task::AgNews, Split::Test) => agnews(&dir.join("agnews/test.csv"), true),
        (Task::AgNews, Split::Train) => agnews(&dir.join("agnews/train_sample.csv"), false),
        (Task::Mmlu, Split::Test) => mmlu(&dir.join("mmlu/test"), "_test.csv"),
        (Task::Mmlu, Split::Train) => mmlu(&dir.join("mmlu/dev"), "_dev.csv"),
        (Task::Csqa, Split::Test) => csqa(&dir.join("csqa/dev.jsonl")),
        (Task::Csqa, Split::Train) => csqa(&dir.join("csqa/train.jsonl")),
        (Task::Squad, _) => squad(&dir.join("squad/dev-v1.1.json")),
    }
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// `text<TAB>label` with a header line; label 1 = positive.
fn sst2(path: &Path) -> Result<Vec<Example>> {
    let text = read_text(path)?;
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.ends_with("\tlabel") => {}
        other => bail!(
            "{}: expected a `text<TAB>label` header, found {:?}",
            path.display(),
            other.map(|(_, l)| l)
        ),
    }
    let mut out = Vec::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let (sentence, label) = line
            .rsplit_once('\t')
            .with_context(|| format!("{}:{}: no tab in row", path.display(), i + 1))?;
        let word = match label.trim() {
            "1" => "positive",
            "0" => "negative",
            other => bail!(
                "{}:{}: label {other:?} is not 0 or 1",
                path.display(),
                i + 1
            ),
        };
        out.push(Example::new(
            (out.len()).to_string(),
            sentence.trim().to_string(),
            word.to_string(),
        ));
    }
    Ok(out)
}

fn csv_reader(path: &Path, has_header: bool) -> Result<csv::Reader<std::fs::File>> {
    csv::ReaderBuilder::new()
        .has_headers(has_header)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))
}

fn csv_line(path: &Path, record: &csv::StringRecord) -> String {
    let line = record.position().map(|p| p.line()).unwrap_or(0);
    format!("{}:{line}", path.display())
}

/// `class,title,description`, class 1..4 = World, Sports, Business, Sci/Tech.
fn agnews(path: &Path, has_header: bool) -> Result<Vec<Example>> {
    const WORDS: [&str; 4] = ["world", "sports", "business", "science"];
    let mut out = Vec::new();
    for record in csv_reader(path, has_header)?.records() {
        let record = record.with_context(|| format!("{}: malformed CSV", path.display()))?;
        let at = || csv_line(path, &record);
        if record.len() != 3 {
            bail!("{}: expected 3 fields, found {}", at(), record.len());
        }
        let class: usize = record[0]
            .trim()
            .parse()
            .ok()
            .filter(|c| (1..=4).contains(c))
            .with_context(|| format!("{}: class {:?} is not 1..4", at(), &record[0]))?;
        // As the task model was trained: backslashes (escaped newlines in the source) → spaces.
        let text = format!("{}. {}", &record[1], &record[2])
            .replace('\\', " ")
            .trim()
            .to_string();
        out.push(Example::new(
            out.len().to_string(),
            text,
            WORDS[class - 1].into(),
        ));
    }
    Ok(out)
}

const LETTERS: [&str; 5] = ["A", "B", "C", "D", "E"];

/// The question, then the lettered choices on one line.
fn lettered(question: &str, choices: &[&str]) -> String {
    let listed: Vec<String> = choices
        .iter()
        .zip(LETTERS)
        .map(|(c, l)| format!("({l}) {}", c.trim()))
        .collect();
    format!("{}\n{}", question.trim(), listed.join(" "))
}

/// One CSV per subject with header `question,choice0..3,answer` (answer 0..3), subjects sorted.
fn mmlu(dir: &Path, suffix: &str) -> Result<Vec<Example>> {
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let subject = name.strip_suffix(suffix)?.to_string();
            Some((subject, p))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no *{suffix} files in {}", dir.display());
    }
    let mut out = Vec::new();
    for (subject, path) in files {
        for (row, record) in csv_reader(&path, true)?.records().enumerate() {
            let record = record.with_context(|| format!("{}: malformed CSV", path.display()))?;
            let at = || csv_line(&path, &record);
            if record.len() != 6 {
                bail!("{}: expected 6 fields, found {}", at(), record.len());
            }
            let answer: usize = record[5]
                .trim()
                .parse()
                .ok()
                .filter(|a| *a < 4)
                .with_context(|| format!("{}: answer {:?} is not 0..3", at(), &record[5]))?;
            let choices: Vec<&str> = (1..5).map(|i| &record[i]).collect();
            let mut ex = Example::new(
                format!("{subject}/{row}"),
                lettered(&record[0], &choices),
                LETTERS[answer].into(),
            );
            ex.group = Some(subject.clone());
            out.push(ex);
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
struct CsqaRow {
    #[serde(rename = "answerKey")]
    answer_key: String,
    id: String,
    question: CsqaQuestion,
}

#[derive(Deserialize)]
struct CsqaQuestion {
    stem: String,
    choices: Vec<CsqaChoice>,
}

#[derive(Deserialize)]
struct CsqaChoice {
    label: String,
    text: String,
}

/// JSON lines; the choices are re-lettered in file order and must be labelled A..E.
fn csqa(path: &Path) -> Result<Vec<Example>> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let row: CsqaRow =
            serde_json::from_str(line).with_context(|| format!("{}: bad row", at()))?;
        let labels: Vec<&str> = row
            .question
            .choices
            .iter()
            .map(|c| c.label.as_str())
            .collect();
        if labels != LETTERS {
            bail!("{}: choice labels {labels:?} are not A..E", at());
        }
        if !LETTERS.contains(&row.answer_key.as_str()) {
            bail!("{}: answerKey {:?} is not A..E", at(), row.answer_key);
        }
        let choices: Vec<&str> = row
            .question
            .choices
            .iter()
            .map(|c| c.text.as_str())
            .collect();
        out.push(Example::new(
            row.id,
            lettered(&row.question.stem, &choices),
            row.answer_key,
        ));
    }
    Ok(out)
}

#[derive(Deserialize)]
struct SquadFile {
    data: Vec<SquadArticle>,
}

#[derive(Deserialize)]
struct SquadArticle {
    paragraphs: Vec<SquadParagraph>,
}

#[derive(Deserialize)]
struct SquadParagraph {
    context: String,
    qas: Vec<SquadQa>,
}

#[derive(Deserialize)]
struct SquadQa {
    id: String,
    question: String,
    answers: Vec<SquadAnswer>,
}

#[derive(Deserialize)]
struct SquadAnswer {
    text: String,
}

/// SQuAD v1.1 JSON: x = context, newline, question; every gold answer kept for EM / F1.
fn squad(path: &Path) -> Result<Vec<Example>> {
    let file: SquadFile = serde_json::from_str(&read_text(path)?)
        .with_context(|| format!("{}: not SQuAD v1.1 JSON", path.display()))?;
    let mut out = Vec::new();
    for paragraph in file.data.iter().flat_map(|a| &a.paragraphs) {
        for qa in &paragraph.qas {
            let answers: Vec<String> = qa
                .answers
                .iter()
                .map(|a| a.text.trim().to_string())
                .collect();
            let Some(first) = answers.first() else {
                bail!("{}: question {} has no answer", path.display(), qa.id);
            };
            let text = format!("{}\n{}", paragraph.context.trim(), qa.question.trim());
            let mut ex = Example::new(qa.id.clone(), text, first.clone());
            ex.answers = answers;
            out.push(ex);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::tasks::default_data_dir;
    use std::collections::BTreeSet;

    fn labels(examples: &[Example]) -> BTreeSet<&str> {
        examples.iter().map(|e| e.label_word.as_str()).collect()
    }

    fn load(task: Task, split: Split) -> Vec<Example> {
        read(&default_data_dir(), task, split).unwrap()
    }

    #[test]
    fn sst2_rows_and_labels() {
        let dev = load(Task::Sst2, Split::Test);
        assert_eq!(dev.len(), 872);
        assert_eq!(labels(&dev), BTreeSet::from(["negative", "positive"]));
        assert_eq!(
            dev[0].text,
            "it 's a charming and often affecting journey ."
        );
        assert_eq!(dev[0].label_word, "positive");
        assert_eq!(load(Task::Sst2, Split::Train).len(), 67_349);
    }

    #[test]
    fn agnews_rows_labels_and_backslashes() {
        let test = load(Task::AgNews, Split::Test);
        assert_eq!(test.len(), 7600);
        assert_eq!(
            labels(&test),
            BTreeSet::from(["business", "science", "sports", "world"])
        );
        for word in Task::AgNews.label_words() {
            assert_eq!(test.iter().filter(|e| e.label_word == *word).count(), 1900);
        }
        assert!(test.iter().all(|e| !e.text.contains('\\')));
        assert!(test[1]
            .text
            .starts_with("The Race is On: Second Private Team Sets Launch Date"));
        assert!(test[1].text.contains("A second team of rocketeers"));
        assert_eq!(load(Task::AgNews, Split::Train).len(), 5000);
    }

    #[test]
    fn mmlu_subjects_rows_and_letters() {
        let test = load(Task::Mmlu, Split::Test);
        assert_eq!(test.len(), 14_042);
        let subjects: BTreeSet<_> = test.iter().map(|e| e.group.clone().unwrap()).collect();
        assert_eq!(subjects.len(), 57);
        assert_eq!(labels(&test), BTreeSet::from(["A", "B", "C", "D"]));
        let dev = load(Task::Mmlu, Split::Train);
        assert_eq!(dev.len(), 285);
        let first = &dev[0];
        assert_eq!(first.group.as_deref(), Some("abstract_algebra"));
        assert!(
            first.text.ends_with("\n(A) 0 (B) 1 (C) 2 (D) 3"),
            "{}",
            first.text
        );
        assert_eq!(first.label_word, "B");
    }

    #[test]
    fn csqa_rows_and_letters() {
        let dev = load(Task::Csqa, Split::Test);
        assert_eq!(dev.len(), 1221);
        assert_eq!(labels(&dev), BTreeSet::from(["A", "B", "C", "D", "E"]));
        assert!(dev[0].text.contains("(A) bank (B) library"));
        assert_eq!(load(Task::Csqa, Split::Train).len(), 9741);
    }

    #[test]
    fn squad_rows_keep_every_answer() {
        let dev = load(Task::Squad, Split::Test);
        assert_eq!(dev.len(), 10_570);
        assert!(dev
            .iter()
            .all(|e| !e.answers.is_empty() && e.answers[0] == e.label_word));
        assert!(dev.iter().any(|e| e.answers.len() > 1));
        assert!(dev[0].text.starts_with("Super Bowl 50 was"));
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let dir = std::env::temp_dir().join(format!("adainfer-ds-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sst2")).unwrap();
        std::fs::write(dir.join("sst2/dev.tsv"), "text\tlabel\ngood \t1\nbad \t7\n").unwrap();
        let err = format!("{:#}", read(&dir, Task::Sst2, Split::Test).unwrap_err());
        assert!(err.contains("dev.tsv:3") && err.contains("\"7\""), "{err}");
        std::fs::create_dir_all(dir.join("agnews")).unwrap();
        std::fs::write(
            dir.join("agnews/test.csv"),
            "class,title,description\n\"9\",\"t\",\"d\"\n",
        )
        .unwrap();
        let err = format!("{:#}", read(&dir, Task::AgNews, Split::Test).unwrap_err());
        assert!(err.contains("test.csv:2") && err.contains("\"9\""), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
