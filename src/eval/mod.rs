//! Evaluation harness: datasets, metrics, A/B runs and reports.
//!
//! - [`tasks`] / [`datasets`]: SST-2, AG News, MMLU, CommonsenseQA, SQuAD from `../shared/data`,
//!   prompts in the paper's template or the model's chat template ([`prompts`]);
//! - [`metrics`]: accuracy, activated layers, pruning and FLOPs ratios, EM / F1;
//! - [`ab`]: every arm (dense, a hook, the oracle) on the same prompts; [`arms`]: arms by name;
//! - [`competence`]: whether dense is good enough on a task for agreement figures to mean anything;
//! - [`run`]: one evaluation end to end; [`report`]: JSON and Markdown;
//! - [`sweep`]: threshold sweeps (accuracy-vs-pruning curve, `calibrate`); [`guarantee`]: the
//!   Learn-then-Test test `calibrate` certifies a rule with; [`budget_sweep`]: the rule each
//!   budget certifies, checked on unseen prompts; [`replay`]: rules judged on recorded passes,
//!   kept in files by [`trace_file`]; [`plots`]: SVG figures;
//! - [`bench`]: dense prefill / decode throughput, ours beside stock mistral.rs; [`peers`]:
//!   llama.cpp's llama-bench on the same GGUF file, and peak memory;
//! - [`bench_decode`]: decode speed of each generation mode against dense; [`lookup_ceiling`]:
//!   the most prompt-lookup speculation could gain on a workload, from dense's own answers;
//!   [`skip_search`]: the blocks a skip-layer draft should leave out.

pub mod ab;
pub mod arms;
pub mod bench;
pub mod bench_decode;
pub mod budget_sweep;
pub mod competence;
pub mod datasets;
pub mod guarantee;
pub mod lookup_ceiling;
pub mod metrics;
pub mod peers;
pub mod per_layer;
pub mod plots;
pub mod prompts;
pub mod replay;
pub mod report;
pub mod run;
pub mod skip_search;
pub mod sweep;
pub mod tasks;
pub mod trace_file;
pub mod workloads;
