//! SST-2 and AG News examples as the task model was trained on them (see
//! `../shared/models/README.md`): prompt `Q: {x}\nA:`, SST-2 `x` = the sentence stripped, AG News
//! `x` = `{title}. {description}` with backslashes → spaces, stripped; the gold answer token is
//! the label word with a leading space. A minimal loader the plugin's `collect` and ShortGPT
//! calibration need; the eval harness owns the fuller dataset code.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
    Sst2,
    AgNews,
}

impl Task {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(
            match name.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
                "sst2" => Task::Sst2,
                "agnews" => Task::AgNews,
                _ => bail!("unknown task {name:?} (expected sst2 or agnews)"),
            },
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            Task::Sst2 => "sst2",
            Task::AgNews => "agnews",
        }
    }

    /// Every answer the task allows (without the leading space).
    pub fn label_words(&self) -> &'static [&'static str] {
        match self {
            Task::Sst2 => &["positive", "negative"],
            Task::AgNews => &["world", "sports", "business", "science"],
        }
    }
}

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
            _ => bail!("unknown split {name:?} (expected train or test)"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The row number in its file (from 0, header excluded).
    pub id: String,
    /// The `x` of the template, already stripped.
    pub text: String,
    /// The gold answer as it follows `A: ` (no leading space).
    pub label_word: String,
}

/// `../shared/data` beside the checkout, or `$ADAINFER_DATA`.
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os("ADAINFER_DATA") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
    }
}

/// The first `limit` examples (file order) of a split. SST-2 test is GLUE dev (labels public).
pub fn load_examples(task: Task, split: Split, limit: Option<usize>) -> Result<Vec<Example>> {
    let dir = default_data_dir();
    let (file, header) = match (task, split) {
        (Task::Sst2, Split::Train) => ("sst2/train.tsv", true),
        (Task::Sst2, Split::Test) => ("sst2/dev.tsv", true),
        (Task::AgNews, Split::Train) => ("agnews/train_sample.csv", false),
        (Task::AgNews, Split::Test) => ("agnews/test.csv", true),
    };
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {} data {}", task.name(), path.display()))?;
    let mut examples = Vec::new();
    for (row, line) in text.lines().skip(header as usize).enumerate() {
        if limit.is_some_and(|l| examples.len() >= l) {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        let parsed = match task {
            Task::Sst2 => sst2_row(line),
            Task::AgNews => agnews_row(line),
        };
        let (text, label_word) = parsed
            .with_context(|| format!("{} line {}", path.display(), row + 1 + header as usize))?;
        examples.push(Example {
            id: row.to_string(),
            text,
            label_word: label_word.to_string(),
        });
    }
    Ok(examples)
}

fn sst2_row(line: &str) -> Result<(String, &'static str)> {
    let (text, label) = line.rsplit_once('\t').context("expected text<TAB>label")?;
    let word = match label.trim() {
        "1" => "positive",
        "0" => "negative",
        other => bail!("label {other:?} is not 0 or 1"),
    };
    Ok((text.trim().to_string(), word))
}

fn agnews_row(line: &str) -> Result<(String, &'static str)> {
    let fields = csv_fields(line)?;
    let [class, title, description] = fields.as_slice() else {
        bail!(
            "expected 3 fields (class,title,description), got {}",
            fields.len()
        );
    };
    let word = match class.as_str() {
        "1" => "world",
        "2" => "sports",
        "3" => "business",
        "4" => "science",
        other => bail!("class {other:?} is not 1..4"),
    };
    let text = format!("{title}. {description}").replace('\\', " ");
    Ok((text.trim().to_string(), word))
}

/// One CSV record on one line: fields optionally quoted, `""` inside quotes is a quote.
fn csv_fields(line: &str) -> Result<Vec<String>> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (_, c) => field.push(c),
        }
    }
    if quoted {
        bail!("unterminated quote");
    }
    fields.push(field);
    Ok(fields)
}

/// The query part of a prompt: `Q: {x}\nA:`.
pub fn prompt(example: &Example) -> String {
    format!("Q: {}\nA:", example.text)
}

/// The text of an answer as the model writes it after `A:` (its gold token).
pub fn answer_text(label_word: &str) -> String {
    format!(" {label_word}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_parse_as_the_model_was_trained() {
        let (x, y) = sst2_row("it 's a charming journey \t1").unwrap();
        assert_eq!((x.as_str(), y), ("it 's a charming journey", "positive"));
        let (x, y) = agnews_row(r#""4","A ""quoted"" title","line one\line two ""#).unwrap();
        assert_eq!(x, "A \"quoted\" title. line one line two");
        assert_eq!(y, "science");
        assert!(agnews_row("\"5\",\"t\",\"d\"").is_err());
        assert!(sst2_row("no tab").is_err());
    }

    #[test]
    fn shared_data_loads() {
        let sst = load_examples(Task::Sst2, Split::Train, Some(3)).unwrap();
        assert_eq!(sst.len(), 3);
        assert_eq!(sst[0].text, "hide new secretions from the parental units");
        assert_eq!(sst[0].label_word, "negative");
        assert_eq!(
            prompt(&sst[0]),
            "Q: hide new secretions from the parental units\nA:"
        );
        let ag = load_examples(Task::AgNews, Split::Test, Some(2)).unwrap();
        assert_eq!(ag[0].label_word, "business");
        assert!(ag[1].text.contains("A second team"), "{}", ag[1].text);
    }
}
