//! Chat messages → prompt text, with the model's own Jinja chat template when it has one.
//!
//! The template is the model's own (`tokenizer_config.json`'s `chat_template` or GGUF's
//! `tokenizer.chat_template`, found by the engine: [`ChatInfo`]), or a file named in the engine
//! config. It
//! is rendered like HF transformers does (trim_blocks, lstrip_blocks, `messages`,
//! `add_generation_prompt`, `bos_token`, `eos_token`, `raise_exception`, Python string methods).
//!
//! Models without one (the shared task models) get the plain fallback: one `role: content`
//! line per message, then `assistant:` for the model to continue.

use super::openai::ChatMessage;
use crate::engine::ChatInfo;
use anyhow::{anyhow, Context, Result};
use minijinja::{context, Environment, ErrorKind};
use std::path::Path;

pub struct ChatTemplate {
    /// `None`: the plain fallback.
    env: Option<Environment<'static>>,
    bos_token: String,
    eos_token: String,
}

const NAME: &str = "chat";

impl ChatTemplate {
    /// The template for a model: `override_file` if given, else the model's own.
    pub fn for_model(model: &ChatInfo, override_file: Option<&Path>) -> Result<Self> {
        let (source, origin) = match override_file {
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read chat template {}", file.display()))?;
                (Some(text), file.display().to_string())
            }
            None => (model.template.clone(), model.origin.clone()),
        };
        let bos_token = model.bos_token.clone();
        let eos_token = model.eos_token.clone();
        let env = source
            .map(|s| compile(s).with_context(|| format!("invalid chat template in {origin}")))
            .transpose()?;
        Ok(Self {
            env,
            bos_token,
            eos_token,
        })
    }

    /// The plain `role: content` fallback, whatever the model says.
    pub fn plain() -> Self {
        Self {
            env: None,
            bos_token: String::new(),
            eos_token: String::new(),
        }
    }

    pub fn is_plain(&self) -> bool {
        self.env.is_none()
    }

    /// The prompt text for `messages`, ending where the assistant's answer begins.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String> {
        let Some(env) = &self.env else {
            return Ok(plain_prompt(messages));
        };
        let template = env.get_template(NAME)?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| anyhow!("the chat template refused these messages: {e}"))
    }
}

/// `role: content` lines, then `assistant:`; the model continues after the colon.
pub fn plain_prompt(messages: &[ChatMessage]) -> String {
    let mut text = String::new();
    for m in messages {
        text.push_str(&m.role);
        text.push_str(": ");
        text.push_str(&m.content);
        text.push('\n');
    }
    text.push_str("assistant:");
    text
}

fn compile(source: String) -> Result<Environment<'static>> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |message: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
        },
    );
    env.add_template_owned(NAME, source)?;
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            name: None,
        }
    }

    fn with_config(name: &str, json: &str) -> ChatTemplate {
        let dir =
            std::env::temp_dir().join(format!("adainfer-template-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer_config.json");
        std::fs::write(&path, json).unwrap();
        ChatTemplate::for_model(&ChatInfo::from_tokenizer_config(&path).unwrap(), None).unwrap()
    }

    #[test]
    fn models_without_a_template_get_the_plain_fallback() {
        let t = with_config("none", r#"{"eos_token": "<|endoftext|>"}"#);
        assert!(t.is_plain());
        let text = t
            .render(&[msg("system", "be brief"), msg("user", "hi")])
            .unwrap();
        assert_eq!(text, "system: be brief\nuser: hi\nassistant:");
    }

    #[test]
    fn hf_templates_render_like_transformers() {
        let chatml = r#"{"bos_token": {"content": "<s>"}, "chat_template": "{{ bos_token }}{% for m in messages %}\n<|{{ m['role'] }}|>{{ m['content'].strip() }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"}"#;
        let t = with_config("chatml", chatml);
        let text = t.render(&[msg("user", "  hi ")]).unwrap();
        assert_eq!(text, "<s><|user|>hi\n<|assistant|>");
    }

    #[test]
    fn template_lists_and_exceptions() {
        let json = r#"{"chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}ok"}]}"#;
        let t = with_config("list", json);
        assert_eq!(t.render(&[msg("user", "a")]).unwrap(), "ok");
        let e = t.render(&[msg("assistant", "a")]).unwrap_err().to_string();
        assert!(e.contains("first message must be from the user"), "{e}");
        let dir =
            std::env::temp_dir().join(format!("adainfer-template-{}-bad", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer_config.json");
        std::fs::write(&path, r#"{"chat_template": "{% for %}"}"#).unwrap();
        let e = format!(
            "{:#}",
            ChatTemplate::for_model(&ChatInfo::from_tokenizer_config(&path).unwrap(), None)
                .err()
                .unwrap()
        );
        assert!(e.contains("tokenizer_config.json"), "{e}");
    }
}
