//! Evaluation harness: datasets, metrics, A/B runs and reports.

pub mod tasks;
