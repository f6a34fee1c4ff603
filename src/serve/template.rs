//! Chat messages → prompt text, with the model's own Jinja chat template when it has one.
//!
//! The template comes from `tokenizer_config.json`'s `chat_template` (a string, or a list of
//! named templates of which `default` is used), or from a file named in the engine config. It
//! is rendered like HF transformers does (trim_blocks, lstrip_blocks, `messages`,
//! `add_generation_prompt`, `bos_token`, `eos_token`, `raise_exception`, Python string methods).
//!
//! Models without one (the shared task models) get the plain fallback: one `role: content`
//! line per message, then `assistant:` for the model to continue.

use super::openai::ChatMessage;
use anyhow::{anyhow, bail, Context, Result};
use minijinja::{context, Environment, ErrorKind};
use serde_json::Value;
use std::path::Path;

pub struct ChatTemplate {
    /// `None`: the plain fallback.
    env: Option<Environment<'static>>,
    bos_token: String,
    eos_token: String,
}

const NAME: &str = "chat";

impl ChatTemplate {
    /// The template for a model: `override_file` if given, else its `tokenizer_config.json`'s.
    pub fn for_model(
        tokenizer_config: Option<&Path>,
        override_file: Option<&Path>,
    ) -> Result<Self> {
        let config: Value = match tokenizer_config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                serde_json::from_str(&text)
                    .with_context(|| format!("invalid {}", path.display()))?
            }
            None => Value::Null,
        };
        let (source, origin) = match override_file {
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read chat template {}", file.display()))?;
                (Some(text), file.display().to_string())
            }
            None => {
                let origin = tokenizer_config.map_or(String::new(), |p| p.display().to_string());
                let source =
                    template_in(&config.get("chat_template").cloned().unwrap_or(Value::Null))
                        .with_context(|| format!("chat_template in {origin}"))?;
                (source, origin)
            }
        };
        let bos_token = special_token(&config, "bos_token");
        let eos_token = special_token(&config, "eos_token");
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

fn template_in(value: &Value) -> Result<Option<String>> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Array(list) => {
            let named = |name: &str| {
                list.iter().find_map(|t| {
                    (t.get("name")?.as_str()? == name).then(|| t.get("template")?.as_str())?
                })
            };
            match named("default") {
                Some(s) => Ok(Some(s.to_string())),
                None => bail!("a list of templates must hold one named \"default\""),
            }
        }
        other => bail!("expected a string or a list of named templates, got {other}"),
    }
}

/// `bos_token` / `eos_token` are a string or an `{"content": …}` object.
fn special_token(config: &Value, key: &str) -> String {
    let v = config.get(key);
    v.and_then(Value::as_str)
        .or_else(|| v?.get("content")?.as_str())
        .unwrap_or_default()
        .to_string()
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
        ChatTemplate::for_model(Some(&path), None).unwrap()
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
            ChatTemplate::for_model(Some(&path), None).err().unwrap()
        );
        assert!(e.contains("tokenizer_config.json"), "{e}");
    }
}
