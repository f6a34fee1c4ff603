#!/usr/bin/env bash
# Re-run every measurement the README reports and write each command's output to docs/results/.
# Usage: bash scripts/reproduce-results.sh   (from anywhere; needs ../shared beside the repo)
# Takes a few hours on the 2-core CPU box once built (most of it the SmolLM2 competence grid and
# tables; the first release build of mistralrs-core takes another ~15 min). Timings are machine-dependent; ratios are what
# the README compares, and each ratio comes from a single run.
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/results
mkdir -p "$out"
cargo build --release --features mistralrs
bin=target/release/adainfer
if [ -n "${CARGO_TARGET_DIR:-}" ]; then bin="$CARGO_TARGET_DIR/release/adainfer"; fi
C=plugin-configs/tiny-llama-sst2-agnews-gap_threshold.toml
A=dense,adaptive,shortgpt,unified_skip,oracle

run() { # name, then the adainfer arguments
  local name=$1; shift
  echo "== $name: adainfer $*" | tee "$out/$name.txt"
  "$bin" "$@" 2>&1 | tee -a "$out/$name.txt"
}

# The quick start's main job on the real model (#11 item 7).
G=$(scripts/fetch-smollm2.sh)
run quickstart-smollm2-sst2-5shot eval --config plugin-configs/smollm2-135m-instruct-sst2.toml \
  --model "$G" --task sst2 --limit 100
# Where SmolLM2 is competent on SST-2, and the certified config for it (#13).
mkdir -p "$out/smollm2-competence"
# The paper averages 0/5/10/15/20 shots; each shot count here over three demo draws, and the
# chat template with demonstrations as earlier turns.
sst2_variants=("qa-0:" "chat-0:--prompt-format chat")
for k in 5 10 15 20; do
  for seed in 0 1 2; do
    sst2_variants+=("qa-$k-s$seed:--shots $k --seed $seed")
  done
done
for seed in 0 1 2; do
  sst2_variants+=("chat-5-s$seed:--prompt-format chat --shots 5 --seed $seed")
done
for v in "${sst2_variants[@]}"; do
  name=${v%%:*}; flags=${v#*:}
  # shellcheck disable=SC2086
  "$bin" eval --model "$G" --task sst2 --label-scoring --limit 300 --arms dense,oracle --format json $flags \
    > "$out/smollm2-competence/sst2-$name.json"
done
for v in "qa-0:" "qa-5-s0:--shots 5 --seed 0"; do
  name=${v%%:*}; flags=${v#*:}
  # shellcheck disable=SC2086
  "$bin" eval --model "$G" --task agnews --label-scoring --limit 300 --arms dense,oracle --format json $flags \
    > "$out/smollm2-competence/agnews-$name.json"
done
for task in csqa mmlu; do
  for v in "qa-0:" "qa-5-s0:--shots 5 --seed 0" "chat-0:--prompt-format chat"; do
    name=${v%%:*}; flags=${v#*:}
    # shellcheck disable=SC2086
    "$bin" eval --model "$G" --task $task --label-scoring --limit 300 --arms dense,oracle --format json $flags \
      > "$out/smollm2-competence/$task-$name.json"
  done
done
B=plugin-configs/smollm2-135m-instruct-gap_threshold.toml
GRID="--thresholds 0.3,0.5,0.7,0.8,0.9,0.95,0.99,0.999 --min-layers 1,15,20,25,28 --per-layer-risks 0.005,0.01,0.02,0.03,0.05,0.1"
# shellcheck disable=SC2086
run calibrate-smollm2-sst2-per-layer calibrate --config $B --model "$G" --task sst2 --shots 5 --seed 2 \
  --label-scoring --budget 0.01 --confidence 0.9 --limit 700 $GRID --out "${TMPDIR:-/tmp}/smollm2-sst2.toml"
# shellcheck disable=SC2086
run calibrate-smollm2-agnews calibrate --config $B --model "$G" --task agnews --label-scoring \
  --budget 0.01 --confidence 0.9 --limit 700 $GRID --out "${TMPDIR:-/tmp}/smollm2-agnews.toml"
run eval-smollm2-sst2-certified eval --config plugin-configs/smollm2-135m-instruct-sst2.toml --model "$G" \
  --task sst2 --limit 300 --arms dense,adaptive,oracle
run eval-smollm2-sst2-svm-certified eval --config plugin-configs/smollm2-135m-instruct-sst2-svm.toml \
  --model "$G" --task sst2 --limit 300 --arms dense,adaptive,oracle
run eval-smollm2-sst2-gap08 eval --config plugin-configs/smollm2-135m-instruct-gap_threshold.toml \
  --model "$G" --task sst2 --shots 5 --seed 2 --label-scoring --limit 300 --arms dense,adaptive
# SQuAD on the real model (#13): generated answers, EM / F1, the per-token oracle, GAP 0.8.
run eval-smollm2-squad-1shot eval --config plugin-configs/smollm2-135m-instruct-gap_threshold.toml \
  --model "$G" --task squad --limit 50 --shots 1 --prompt-format qa --arms dense,adaptive,oracle
# The paper's Tables 4 and 6 and the budget sweep, every rule certified (#13).
ADAINFER_BIN="$bin" bash scripts/smollm2-tables.sh
S=plugin-configs/smollm2-135m-instruct-sst2-svm.toml
run eval-smollm2-sst2-baselines-last3 eval --config $S --model "$G" --task sst2 --limit 300 \
  --arms dense,shortgpt,unified_skip --set policy.shortgpt.layers=3 --set policy.unified_skip.target_speedup=1.11
run eval-smollm2-sst2-baselines-bi3 eval --config $S --model "$G" --task sst2 --limit 300 \
  --arms dense,shortgpt,unified_skip --set policy.shortgpt.layers=3 --set policy.shortgpt.by=block_influence \
  --set policy.unified_skip.target_speedup=1.2
run eval-smollm2-agnews-certified eval --config plugin-configs/smollm2-135m-instruct-agnews.toml --model "$G" \
  --task agnews --limit 300 --arms dense,adaptive,oracle
run eval-smollm2-sst2-chat-certified eval --config plugin-configs/smollm2-135m-instruct-sst2-chat.toml \
  --model "$G" --task sst2 --limit 300 --arms dense,adaptive,oracle
# GGUF speed against llama.cpp (its llama-bench, built by ../shared/tools) and mistral.rs (#11 item 5).
LB="$(../shared/tools/build-llama-cpp.sh | tail -1)/llama-bench"
run bench-smollm2-gguf-llama-cpp bench --model "$G" --llama-bench "$LB" --no-mistralrs
run bench-smollm2-gguf-mistralrs bench --model "$G"

# Engine throughput vs stock mistral.rs (#2 item 7).
run bench-smollm2-shape bench --synthetic smollm2-135m --batch 8
run bench-task-model bench --model models/tiny-llama-sst2-agnews

# Evaluation tables (#4).
run eval-sst2-0shot eval --config $C --task sst2 --arms $A --plots $out/sst2-0shot \
  --sweep-thresholds 0.2,0.4,0.6,0.7,0.8,0.9,0.95
run eval-agnews-0shot-oracle eval --model models/tiny-llama-sst2-agnews --task agnews --limit 1000 \
  --arms dense,oracle
run eval-sst2-table4 eval --config plugin-configs/tiny-llama-sst2-agnews-svm.toml --task sst2 \
  --arms dense,gap_threshold,svm,logistic,crf,oracle
run eval-agnews-0shot eval --config $C --task agnews --limit 300 --arms $A
run eval-sst2-4shot eval --config $C --task sst2 --shots 4 --limit 150 --arms $A
run eval-agnews-4shot eval --config $C --task agnews --shots 4 --limit 100 --arms $A
run eval-sst2-mistralrs eval --config $C --task sst2 --arms dense,adaptive,mistralrs
run calibrate-sst2 calibrate --config $C --task sst2 --budget 0.01 --confidence 0.9 --limit 400 \
  --thresholds 0.3,0.4,0.5,0.6,0.7,0.8,0.9 --out "${TMPDIR:-/tmp}/sst2-calibrated.toml"
run eval-sst2-calibrated eval --config "${TMPDIR:-/tmp}/sst2-calibrated.toml" --task sst2 --arms dense,adaptive
run calibrate-sst2-min-layer calibrate --config $C --task sst2 --budget 0.01 --confidence 0.9 --limit 1000 \
  --thresholds 0.3,0.4,0.5,0.6,0.7,0.8,0.9 --min-layers 1,3,5,7 --out "${TMPDIR:-/tmp}/sst2-calibrated-2.toml"
run eval-sst2-calibrated-min-layer eval --config "${TMPDIR:-/tmp}/sst2-calibrated-2.toml" --task sst2 --arms dense,adaptive

# Lossless speculative decoding on the real model (#16): prompt lookup per workload, with the
# price of verifying N - 1 drafts in one pass; both threads, as users run it.
run decode-smollm2-speculative bench-decode \
  --config plugin-configs/smollm2-135m-instruct-speculative.toml --workloads all --prompts 8 \
  --max-tokens 96 --draft-layer 24 --verify-cost-rows 10 --lookup-ceiling 6 \
  --modes dense,self_speculative/prompt_lookup/k=3,self_speculative/prompt_lookup/k=6,self_speculative/auto/k=6,self_speculative/layers/k=3

# Layer drafts with a fixed and an adaptive confidence bar (#16 item 3).
run decode-smollm2-layer-drafts-adaptive bench-decode \
  --config plugin-configs/smollm2-135m-instruct-speculative.toml --workloads all --prompts 8 \
  --max-tokens 96 --draft-layer 24 \
  --modes dense,self_speculative/layers/k=3,self_speculative/layers/k=6/c=0.5,self_speculative/layers/k=6/c=0.5/a=0.5,self_speculative/layers/k=6/c=0.5/a=0.7

# Layer drafts whose head scores only the vocabulary's first ids (FR-Spec-style, #16 item 3).
run decode-smollm2-layer-drafts-vocab bench-decode \
  --config plugin-configs/smollm2-135m-instruct-speculative.toml --workloads all --prompts 8 \
  --max-tokens 96 --draft-layer 24 \
  --modes dense,self_speculative/layers/k=3,self_speculative/layers/k=6/c=0.5/a=0.7,self_speculative/layers/k=6/c=0.5/a=0.7/v=16384,self_speculative/layers/k=6/c=0.5/a=0.7/v=8192

# Skip-layer drafts (#16 item 3): the greedy skip-set search on SQuAD prompts #64-71, then the
# sets it found decoded beside dense on the three workloads.
run search-skip-draft-smollm2 search-skip-draft \
  --config plugin-configs/smollm2-135m-instruct-speculative.toml --max-skipped 10 --patience 10
run search-skip-draft-smollm2-defaults search-skip-draft \
  --config plugin-configs/smollm2-135m-instruct-speculative.toml
run decode-smollm2-skip-drafts bench-decode \
  --config plugin-configs/smollm2-135m-instruct-speculative.toml --workloads all --prompts 8 \
  --max-tokens 96 --draft-layer 24 \
  --modes dense,self_speculative/auto/k=6,self_speculative/layers/k=3,self_speculative/skip_layers/k=1/s=7,self_speculative/skip_layers/k=3/s=5+7+14/c=0.5/a=0.7,self_speculative/skip_layers/k=2/s=4+5+6+7+14+15+18+23+26+27
# auto with and without skip-layer drafts to weigh.
run decode-smollm2-auto-with-skip-drafts bench-decode \
  --config plugin-configs/smollm2-135m-instruct-speculative.toml --workloads all --prompts 8 \
  --max-tokens 96 --modes dense,self_speculative/auto/k=6,self_speculative/auto/k=6/s=7,self_speculative/auto/k=6/s=5+7+14

# Generation modes (#5), one thread so the per-token work is what is compared.
export RAYON_NUM_THREADS=1
run decode-task-block1 bench-decode --model models/tiny-llama-sst2-agnews --draft-layer 1 \
  --draft-tokens 3 --prompts 12 --max-tokens 32 --modes all
run decode-task-policy bench-decode \
  --config plugin-configs/generation/tiny-llama-sst2-agnews-self_speculative.toml \
  --prompts 12 --max-tokens 32 --modes all
run decode-smollm2-shape bench-decode --synthetic smollm2-135m --draft-layer 8 --draft-tokens 3 \
  --prompts 3 --max-tokens 12 --modes all
