//! `--set section.key=value` overrides and path resolution for [`super::config::PluginConfig`],
//! applied to the parsed TOML table before it is checked against the typed config.

use anyhow::{anyhow, bail, Result};
use std::path::{Path, PathBuf};

/// Keys holding paths: relative values from the file resolve against its directory, relative
/// values from `--set` against the working directory.
pub(super) const PATH_KEYS: [&str; 5] = [
    "model.path",
    "features.exit_heads",
    "policy.svm.classifier",
    "policy.logistic.classifier",
    "policy.crf.classifier",
];

pub(super) fn resolve_path_at(doc: &mut toml::Table, dotted: &str, base: &Path) {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut table = doc;
    for part in parts {
        match table.get_mut(part) {
            Some(toml::Value::Table(t)) => table = t,
            _ => return,
        }
    }
    if let Some(toml::Value::String(s)) = table.get_mut(last) {
        let p = Path::new(s.as_str());
        if p.is_relative() {
            *s = base.join(p).to_string_lossy().into_owned();
        }
    }
}

/// Whether `kind` owns a table under `[policy]`: every policy kind but `dense` and `oracle`,
/// which take no parameters.
fn owns_table(kind: &str) -> bool {
    super::policy::POLICY_KINDS.contains(&kind) && kind != "dense" && kind != "oracle"
}

pub(super) fn apply_overrides(doc: &mut toml::Table, overrides: &[String]) -> Result<()> {
    let parsed = overrides
        .iter()
        .map(|o| {
            let (key, value) = o
                .split_once('=')
                .ok_or_else(|| anyhow!("--set {o:?}: expected section.key=value"))?;
            Ok((key.trim().to_string(), parse_value(value.trim())))
        })
        .collect::<Result<Vec<_>>>()?;
    // `policy.kind` first, so shorthands below follow the kind the command line picked.
    let (kind_first, rest): (Vec<_>, Vec<_>) =
        parsed.into_iter().partition(|(k, _)| k == "policy.kind");
    for (key, value) in kind_first.into_iter().chain(rest) {
        let key = expand_policy_shorthand(doc, &key);
        let value = match value {
            toml::Value::String(s) if PATH_KEYS.contains(&key.as_str()) => {
                let p = PathBuf::from(&s);
                let abs = if p.is_relative() {
                    std::env::current_dir()?.join(p)
                } else {
                    p
                };
                toml::Value::String(abs.to_string_lossy().into_owned())
            }
            v => v,
        };
        set_dotted(doc, &key, value)?;
    }
    Ok(())
}

/// `policy.threshold` → `policy.<active kind>.threshold`.
fn expand_policy_shorthand(doc: &toml::Table, key: &str) -> String {
    let parts: Vec<&str> = key.split('.').collect();
    let shorthand =
        parts.len() == 2 && parts[0] == "policy" && parts[1] != "kind" && !owns_table(parts[1]);
    if shorthand {
        let kind = doc
            .get("policy")
            .and_then(|p| p.get("kind"))
            .and_then(|k| k.as_str())
            .unwrap_or("gap_threshold");
        return format!("policy.{kind}.{}", parts[1]);
    }
    key.to_string()
}

/// A `--set` value: TOML (`0.6`, `true`, `["gap"]`, `"text"`) or else a bare string.
fn parse_value(text: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {text}")) {
        Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(text.into())),
        Err(_) => toml::Value::String(text.into()),
    }
}

fn set_dotted(doc: &mut toml::Table, key: &str, value: toml::Value) -> Result<()> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        bail!("--set {key}: expected section.key=value");
    }
    let mut table = doc;
    for part in &parts[..parts.len() - 1] {
        let entry = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => bail!("--set {key}: {part} is a value, not a section"),
        };
    }
    table.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}
