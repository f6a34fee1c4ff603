//! adainfer: adaptive-depth (early-exit) LLM inference.
//!
//! Four rooms:
//! - [`engine`]: the host pipeline (load a Hugging Face model, run it, generate);
//! - [`hook`]: the [`hook::LayerHook`] trait, the only door between engine and plugin;
//! - [`plugin`]: AdaInfer itself (probe features, exit policies, classifiers, TOML config);
//! - [`eval`]: datasets, metrics, A/B runs and reports;
//! - [`serve`]: the engine config and the OpenAI-compatible server.

pub mod engine;
pub mod eval;
pub mod hook;
#[cfg(feature = "mistralrs")]
pub mod mistralrs;
pub mod plugin;
pub mod serve;

pub use engine::{Engine, LoadOptions};
pub use hook::{Decision, ExitAnswer, LayerHook, LayerView, Probe, SkipPlan};
