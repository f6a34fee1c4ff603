//! The engine against HF transformers: every shared reference model, every case in its
//! `reference.json`, per layer and at the output, plus the greedy continuation.

mod common;

use adainfer::{Engine, LoadOptions};
use common::reference::{check_engine, Reference, Tolerance};
use std::path::Path;

fn check_model(dir: &Path) {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let engine = Engine::load(dir, &LoadOptions::default()).unwrap();
    let reference = Reference::read(&dir.join("reference.json"));
    check_engine(&name, &engine, &reference, Tolerance::EXACT);
}

#[test]
fn random_llama_matches_transformers() {
    check_model(&common::reference_models()[0]);
}

#[test]
fn random_llama3_rope_matches_transformers() {
    check_model(&common::reference_models()[1]);
}

#[test]
fn random_mistral_matches_transformers() {
    check_model(&common::reference_models()[2]);
}

#[test]
fn random_qwen2_matches_transformers() {
    check_model(&common::reference_models()[3]);
}

#[test]
fn random_gemma3_matches_transformers() {
    check_model(&common::reference_models()[4]);
}

#[test]
fn random_opt_matches_transformers() {
    check_model(&common::reference_models()[5]);
}

#[test]
fn random_gptj_matches_transformers() {
    check_model(&common::reference_models()[6]);
}
