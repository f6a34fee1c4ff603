//! The engine config: one TOML file that says which model to serve, how, and whether AdaInfer
//! is on. Relative paths in it are resolved against the file's own directory, so a config can
//! be used from anywhere.
//!
//! ```toml
//! [model]
//! path = "../models/tiny-llama-sst2-agnews"
//! dtype = "auto"
//! device = "cpu"
//!
//! [scheduler]
//! queue_capacity = 64
//! max_tokens = 256
//!
//! [sampling]
//! temperature = 0.0
//!
//! [adaptive]
//! enabled = true
//! plugin = "../plugin-configs/tiny-llama-sst2-agnews-gap_threshold.toml"
//! mode = "early_exit"     # or "self_speculative"
//! kv_fill = "recompute"   # or "propagate", "dense_after_prefill"
//! ```

use crate::engine::block_set::BlockSet;
use crate::engine::kv_fill::KvFill;
use crate::engine::modes::{Mode, ModeSpec};
use crate::engine::speculative::{DraftSettings, DraftSource};
use crate::engine::SamplingParams;
use crate::{Engine, LoadOptions};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    pub model: ModelSection,
    #[serde(default)]
    pub scheduler: SchedulerSection,
    /// Defaults for requests that leave sampling fields out.
    #[serde(default)]
    pub sampling: SamplingParams,
    #[serde(default)]
    pub adaptive: AdaptiveSection,
    /// The file this config was read from (empty when built in code).
    #[serde(skip)]
    pub source: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Hugging Face model directory.
    pub path: PathBuf,
    #[serde(default = "default_dtype")]
    pub dtype: String,
    #[serde(default = "default_device")]
    pub device: String,
    /// The model id clients see in `/v1/models` (default: the directory's name).
    #[serde(default)]
    pub name: Option<String>,
    /// A Jinja chat template file used instead of `tokenizer_config.json`'s `chat_template`.
    #[serde(default)]
    pub chat_template: Option<PathBuf>,
}

fn default_dtype() -> String {
    "auto".into()
}

fn default_device() -> String {
    "cpu".into()
}

/// How requests wait and how large they may be.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSection {
    /// Requests waiting for the engine; a request that finds the queue full gets HTTP 503.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// The largest `max_tokens` a request may ask for.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// `max_tokens` for requests that give none.
    #[serde(default = "default_request_max_tokens")]
    pub default_max_tokens: usize,
    /// The longest prompt accepted, in tokens (default: the model's context length).
    #[serde(default)]
    pub max_prompt_tokens: Option<usize>,
    /// The largest request body accepted, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Dense requests waiting together are decoded together, up to this many (1: one at a time).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Open connections at most; further clients wait in the kernel's backlog until one closes.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a client may take to send a request's headers (also how long an idle keep-alive
    /// connection stays open); a slower one is disconnected.
    #[serde(default = "default_client_timeout_secs")]
    pub header_timeout_secs: f64,
    /// Seconds a client may take to send a request's body; a slower one gets HTTP 408.
    #[serde(default = "default_client_timeout_secs")]
    pub body_timeout_secs: f64,
}

fn default_max_connections() -> usize {
    512
}

fn default_client_timeout_secs() -> f64 {
    30.0
}

fn default_max_batch() -> usize {
    8
}

fn default_queue_capacity() -> usize {
    64
}

fn default_max_tokens() -> usize {
    256
}

fn default_request_max_tokens() -> usize {
    16
}

fn default_max_body_bytes() -> usize {
    1 << 20
}

impl Default for SchedulerSection {
    fn default() -> Self {
        Self {
            queue_capacity: default_queue_capacity(),
            max_tokens: default_max_tokens(),
            default_max_tokens: default_request_max_tokens(),
            max_prompt_tokens: None,
            max_body_bytes: default_max_body_bytes(),
            max_batch: default_max_batch(),
            max_connections: default_max_connections(),
            header_timeout_secs: default_client_timeout_secs(),
            body_timeout_secs: default_client_timeout_secs(),
        }
    }
}

/// Whether AdaInfer is on, with which plugin config, and how adaptive requests generate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveSection {
    #[serde(default)]
    pub enabled: bool,
    /// Plugin config (`plugin-configs/*.toml`); its `[policy] kind` is the default policy.
    #[serde(default)]
    pub plugin: Option<PathBuf>,
    /// `--set`-style overrides for the plugin config (`"policy.threshold=0.6"`).
    #[serde(default)]
    pub set: Vec<String>,
    /// `early_exit` (each token stops where the policy says) or `self_speculative` (lossless).
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// How early exit fills the KV entries it skips: `recompute` (exact), `propagate`,
    /// `dense_after_prefill`.
    #[serde(default = "default_kv_fill")]
    pub kv_fill: KvFill,
    /// Drafts per round in `self_speculative` mode.
    #[serde(default = "default_draft_tokens")]
    pub draft_tokens: usize,
    /// What drafts in `self_speculative` mode: `layers`, `prompt_lookup`, `auto` or
    /// `skip_layers`.
    #[serde(default = "default_draft_source")]
    pub draft_source: DraftSource,
    /// Prompt lookup: the longest n-gram matched.
    #[serde(default = "default_draft_ngram")]
    pub draft_ngram: usize,
    /// `skip_layers` drafts: the blocks left out, counted from 1.
    #[serde(default)]
    pub draft_skip: BlockSet,
}

fn default_draft_source() -> DraftSource {
    DraftSettings::default().source
}

fn default_draft_ngram() -> usize {
    DraftSettings::default().ngram
}

fn default_mode() -> Mode {
    Mode::EarlyExit
}

fn default_kv_fill() -> KvFill {
    KvFill::Recompute
}

fn default_draft_tokens() -> usize {
    4
}

impl Default for AdaptiveSection {
    fn default() -> Self {
        Self {
            enabled: false,
            plugin: None,
            set: Vec::new(),
            mode: default_mode(),
            kv_fill: default_kv_fill(),
            draft_tokens: default_draft_tokens(),
            draft_source: default_draft_source(),
            draft_ngram: default_draft_ngram(),
            draft_skip: BlockSet::new(),
        }
    }
}

impl AdaptiveSection {
    /// How requests with an exit policy generate.
    pub fn mode_spec(&self) -> ModeSpec {
        let mut spec = ModeSpec {
            mode: self.mode,
            kv_fill: self.kv_fill,
            ..ModeSpec::default()
        };
        spec.draft.tokens = self.draft_tokens;
        spec.draft.source = self.draft_source;
        spec.draft.ngram = self.draft_ngram;
        spec.draft.skip = self.draft_skip;
        spec
    }
}

/// Command-line override of the `[adaptive]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdaptiveOverride {
    /// Keep what the file says.
    FromFile,
    /// `--dense`: exactly the dense engine.
    Dense,
    /// `--adaptive PLUGIN.toml` (a path as given on the command line, not resolved against the file).
    Plugin(PathBuf),
}

impl EngineConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read engine config {}", path.display()))?;
        let mut config: EngineConfig = toml::from_str(&text)
            .with_context(|| format!("invalid engine config {}", path.display()))?;
        config.source = path.to_path_buf();
        let base = path.parent().unwrap_or(Path::new(""));
        config.model.path = base.join(&config.model.path);
        config.model.chat_template = config.model.chat_template.map(|p| base.join(p));
        config.adaptive.plugin = config.adaptive.plugin.map(|p| base.join(p));
        config
            .validate()
            .with_context(|| format!("invalid engine config {}", path.display()))?;
        Ok(config)
    }

    /// A config for `model_dir` with every default (dense, greedy).
    pub fn for_model(model_dir: &Path) -> Self {
        Self {
            model: ModelSection {
                path: model_dir.to_path_buf(),
                dtype: default_dtype(),
                device: default_device(),
                name: None,
                chat_template: None,
            },
            scheduler: SchedulerSection::default(),
            sampling: SamplingParams::greedy(),
            adaptive: AdaptiveSection::default(),
            source: PathBuf::new(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        let s = &self.scheduler;
        if s.queue_capacity == 0 {
            bail!("scheduler.queue_capacity must be at least 1");
        }
        if s.max_tokens == 0 {
            bail!("scheduler.max_tokens must be at least 1");
        }
        if s.default_max_tokens == 0 || s.default_max_tokens > s.max_tokens {
            bail!(
                "scheduler.default_max_tokens = {} must be between 1 and scheduler.max_tokens ({})",
                s.default_max_tokens,
                s.max_tokens
            );
        }
        if s.max_batch == 0 {
            bail!("scheduler.max_batch must be at least 1 (1 turns batching off)");
        }
        if s.max_prompt_tokens == Some(0) {
            bail!("scheduler.max_prompt_tokens must be at least 1");
        }
        if s.max_connections == 0 {
            bail!("scheduler.max_connections must be at least 1");
        }
        for (name, secs) in [
            ("header_timeout_secs", s.header_timeout_secs),
            ("body_timeout_secs", s.body_timeout_secs),
        ] {
            // A day at most: beyond that a timeout is no defence (and Duration would overflow).
            if !(secs > 0.0 && secs <= 86_400.0) {
                bail!("scheduler.{name} = {secs} must be a number of seconds in (0, 86400]");
            }
        }
        self.sampling.validate().context("in [sampling]")?;
        let a = &self.adaptive;
        if a.enabled && a.plugin.is_none() {
            bail!("adaptive.enabled = true needs adaptive.plugin (a plugin config file)");
        }
        if a.mode == Mode::Dense {
            bail!("adaptive.mode = \"dense\" is the dense engine: set adaptive.enabled = false");
        }
        if a.mode == Mode::SelfSpeculative {
            a.mode_spec().draft.validate().context("in [adaptive]")?;
        }
        Ok(())
    }

    pub fn apply(&mut self, adaptive: AdaptiveOverride) {
        match adaptive {
            AdaptiveOverride::FromFile => {}
            AdaptiveOverride::Dense => self.adaptive.enabled = false,
            AdaptiveOverride::Plugin(path) => {
                self.adaptive.enabled = true;
                self.adaptive.plugin = Some(path);
            }
        }
    }

    /// The plugin config in use, or `None` for the dense engine.
    pub fn plugin(&self) -> Option<&Path> {
        self.adaptive
            .plugin
            .as_deref()
            .filter(|_| self.adaptive.enabled)
    }

    pub fn load_engine(&self) -> Result<Engine> {
        let m = &self.model;
        let options = LoadOptions::from_names(&m.dtype, &m.device)
            .with_context(|| format!("in [model] of {}", self.source.display()))?;
        let engine = Engine::load(&m.path, &options)?;
        let a = &self.adaptive;
        let skips = matches!(a.draft_source, DraftSource::SkipLayers | DraftSource::Auto);
        if a.mode == Mode::SelfSpeculative && skips {
            // Refused at start-up, not at every request.
            a.draft_skip
                .check_fits(engine.model.num_layers())
                .with_context(|| format!("adaptive.draft_skip in {}", self.source.display()))?;
        }
        Ok(engine)
    }

    /// The model id clients see.
    pub fn model_name(&self) -> String {
        self.model.name.clone().unwrap_or_else(|| {
            self.model
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("engine.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn temp_dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("adainfer-config-{}-{name}", std::process::id()))
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let dir = temp_dir("relative");
        let path = write(
            &dir,
            "[model]\npath = \"m\"\n[adaptive]\nenabled = true\nplugin = \"p/plugin.toml\"\n",
        );
        let c = EngineConfig::load(&path).unwrap();
        assert_eq!(c.model.path, dir.join("m"));
        assert_eq!(c.adaptive.mode_spec().label(), "early_exit/recompute");
        assert_eq!(c.plugin(), Some(dir.join("p/plugin.toml").as_path()));
        assert_eq!(c.model_name(), "m");
        assert_eq!(c.scheduler.queue_capacity, 64);
    }

    #[test]
    fn unknown_keys_name_the_key_and_the_file() {
        let dir = temp_dir("unknown");
        let path = write(&dir, "[model]\npath = \"m\"\n[scheduler]\nmax_batchh = 4\n");
        let e = format!("{:#}", EngineConfig::load(&path).unwrap_err());
        assert!(e.contains("max_batchh"), "{e}");
        assert!(e.contains(&path.display().to_string()), "{e}");
        let path = write(
            &dir,
            "[model]\npath = \"m\"\n[sampling]\ntemprature = 1.0\n",
        );
        let e = format!("{:#}", EngineConfig::load(&path).unwrap_err());
        assert!(e.contains("temprature"), "{e}");
    }

    #[test]
    fn bad_values_are_refused() {
        let dir = temp_dir("bad");
        let path = write(&dir, "[model]\npath = \"m\"\n[adaptive]\nenabled = true\n");
        let e = format!("{:#}", EngineConfig::load(&path).unwrap_err());
        assert!(e.contains("adaptive.plugin"), "{e}");
        let path = write(
            &dir,
            "[model]\npath = \"m\"\n[scheduler]\nmax_tokens = 4\ndefault_max_tokens = 8\n",
        );
        let e = format!("{:#}", EngineConfig::load(&path).unwrap_err());
        assert!(e.contains("default_max_tokens"), "{e}");
        let path = write(&dir, "[model]\npath = \"m\"\n[sampling]\ntop_p = 0.0\n");
        let e = format!("{:#}", EngineConfig::load(&path).unwrap_err());
        assert!(e.contains("top_p"), "{e}");
        let path = write(&dir, "[model]\npath = \"m\"\n[adaptive]\nmode = \"fast\"\n");
        let e = format!("{:#}", EngineConfig::load(&path).unwrap_err());
        assert!(e.contains("fast") && e.contains("self_speculative"), "{e}");
        let path = write(
            &dir,
            "[model]\npath = \"m\"\n[adaptive]\nmode = \"dense\"\n",
        );
        let e = format!("{:#}", EngineConfig::load(&path).unwrap_err());
        assert!(e.contains("adaptive.enabled = false"), "{e}");
        for bad in [
            "header_timeout_secs = 0.0",
            "body_timeout_secs = nan",
            "body_timeout_secs = 1e30",
        ] {
            let path = write(
                &dir,
                &format!("[model]\npath = \"m\"\n[scheduler]\n{bad}\n"),
            );
            let e = format!("{:#}", EngineConfig::load(&path).unwrap_err());
            let field = bad.split(' ').next().unwrap();
            assert!(e.contains(field) && e.contains("86400"), "{bad}: {e}");
        }
        let path = write(
            &dir,
            "[model]\npath = \"m\"\n[scheduler]\nmax_connections = 0\n",
        );
        let e = format!("{:#}", EngineConfig::load(&path).unwrap_err());
        assert!(e.contains("max_connections"), "{e}");
        let skip = "[adaptive]\nmode = \"self_speculative\"\ndraft_source = \"skip_layers\"\n";
        let path = write(&dir, &format!("[model]\npath = \"m\"\n{skip}"));
        let e = format!("{:#}", EngineConfig::load(&path).unwrap_err());
        assert!(e.contains("skip_layers") && e.contains("skip"), "{e}");
        // A block the model lacks is refused when the model is loaded (the vendored one has 12).
        let model = std::fs::canonicalize("models/tiny-llama-sst2-agnews").unwrap();
        let text = format!("[model]\npath = {:?}\n{skip}draft_skip = [3, 13]\n", model);
        let c = EngineConfig::load(&write(&dir, &text)).unwrap();
        let e = format!("{:#}", c.load_engine().err().expect("block 13 refused"));
        assert!(e.contains("draft_skip") && e.contains("block 13"), "{e}");
        let auto = text.replace("skip_layers", "auto");
        let c = EngineConfig::load(&write(&dir, &auto)).unwrap();
        let e = format!(
            "{:#}",
            c.load_engine().err().expect("block 13 refused for auto")
        );
        assert!(e.contains("block 13"), "{e}");
    }

    #[test]
    fn command_line_overrides_the_adaptive_section() {
        let dir = temp_dir("override");
        let path = write(
            &dir,
            "[model]\npath = \"m\"\n[adaptive]\nenabled = true\nplugin = \"p.toml\"\n",
        );
        let mut c = EngineConfig::load(&path).unwrap();
        c.apply(AdaptiveOverride::Dense);
        assert_eq!(c.plugin(), None);
        c.apply(AdaptiveOverride::Plugin("other.toml".into()));
        assert_eq!(c.plugin(), Some(Path::new("other.toml")));
        let mut d = EngineConfig::for_model(Path::new("m"));
        assert_eq!(d.plugin(), None);
        d.apply(AdaptiveOverride::FromFile);
        assert_eq!(d.plugin(), None);
    }
}
