//! How an example becomes the text the model reads: the paper's `Q: {x}\nA:` template, or
//! the model's own chat template as users prompt an instruct model — an instruction line, the
//! demonstrations as earlier user / assistant turns, then the query.
//!
//! The answer is scored at the first token the model writes: after `A:` that is the label word
//! with a leading space (` positive`); at the start of an assistant turn, the bare word.

use super::tasks::{Example, FewShot, Task};
use crate::engine::Engine;
use crate::serve::openai::ChatMessage;
use crate::serve::template::ChatTemplate;
use anyhow::{bail, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptFormat {
    /// `Q: {x}\nA: {y}\n\n` per demonstration, then `Q: {x}\nA:` (the AdaInfer paper).
    Qa,
    /// The model's chat template.
    Chat,
}

impl PromptFormat {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "qa" => Self::Qa,
            "chat" => Self::Chat,
            other => bail!("unknown prompt format {other:?} (qa or chat)"),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Qa => "qa",
            Self::Chat => "chat",
        }
    }

    /// The text of a label as the model's first answer token spells it.
    pub fn answer_text(&self, label_word: &str) -> String {
        match self {
            Self::Qa => super::tasks::answer_text(label_word),
            Self::Chat => label_word.to_string(),
        }
    }
}

/// Builds every prompt of one evaluation.
pub struct Prompts {
    pub format: PromptFormat,
    task: Task,
    few_shot: FewShot,
    template: Option<ChatTemplate>,
}

fn message(role: &str, content: String) -> ChatMessage {
    ChatMessage {
        role: role.into(),
        content,
        name: None,
    }
}

impl Prompts {
    pub fn new(
        engine: &Engine,
        task: Task,
        format: PromptFormat,
        few_shot: FewShot,
    ) -> Result<Self> {
        let template = match format {
            PromptFormat::Qa => None,
            PromptFormat::Chat => {
                let t = ChatTemplate::for_model(&engine.chat, None)?;
                if t.is_plain() {
                    bail!("--prompt-format chat: the model has no chat template");
                }
                Some(t)
            }
        };
        Ok(Self {
            format,
            task,
            few_shot,
            template,
        })
    }

    pub fn few_shot(&self) -> &FewShot {
        &self.few_shot
    }

    /// The prompt text of `example`.
    pub fn text(&self, example: &Example) -> Result<String> {
        let Some(template) = &self.template else {
            return Ok(self.few_shot.prompt(example));
        };
        // The instruction opens the first user turn; each demonstration is a solved exchange.
        let mut messages = Vec::new();
        let mut opening = Some(self.task.instruction());
        let mut user = |text: &str| match opening.take() {
            Some(instruction) => message("user", format!("{instruction}\n\n{text}")),
            None => message("user", text.to_string()),
        };
        for demo in self.few_shot.demonstrations(example) {
            messages.push(user(&demo.text));
            messages.push(message("assistant", demo.label_word.clone()));
        }
        messages.push(user(&example.text));
        template.render(&messages)
    }
}
