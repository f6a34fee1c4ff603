//! The AdaInfer plugin: probe features, exit policies, classifiers and their TOML config.

pub mod lens;
