#!/usr/bin/env bash
# Long fuzzing outside CI with libFuzzer (CI runs the seeded mutation fuzzer in
# tests/fuzz_model_files.rs instead). Needs a nightly toolchain and `cargo install cargo-fuzz`.
#
#   scripts/fuzz.sh TARGET [SECONDS]     TARGET: gguf_file | safetensors_file | model_config | plugin_config
#
# Writes the seed corpus (fuzz/corpus/TARGET: good files built from ../shared), then fuzzes for
# SECONDS (default 600) with every allocation and the process capped at 4 GiB; a crash, panic,
# abort or oversized allocation is saved under fuzz/artifacts/TARGET/ and ends the run non-zero.
set -euo pipefail
target="${1:?usage: scripts/fuzz.sh gguf_file|safetensors_file|model_config|plugin_config [SECONDS]}"
seconds="${2:-600}"
cd "$(dirname "$0")/../fuzz"
export CARGO_TARGET_DIR="${ADAINFER_FUZZ_TARGET_DIR:-$PWD/target}"
cargo +nightly run --quiet --release --bin seeds
cargo +nightly fuzz run "$target" "corpus/$target" -- \
  -max_total_time="$seconds" -rss_limit_mb=4096 -malloc_limit_mb=4096 -timeout=30
