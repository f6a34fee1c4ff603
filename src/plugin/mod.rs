//! The AdaInfer plugin: probe features, exit policies, classifiers and their TOML config.
//!
//! ```text
//! PluginConfig::load(file, --set …) → load_engine → AdaInfer::from_config → forward(…, Some(&mut hook), …)
//! ```

mod adainfer;
mod calibration_record;
pub mod classifier;
pub mod config;
pub mod crf;
pub mod exit_heads;
pub mod exit_heads_fit;
pub mod features;
pub mod lens;
mod overrides;
pub mod policy;
mod train_config;
pub mod training;

pub use adainfer::{AdaInfer, ExitStats};
pub use config::{load_engine, PluginConfig};
