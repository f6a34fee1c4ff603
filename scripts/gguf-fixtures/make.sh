#!/usr/bin/env bash
# GGUF files of the shared random models made by llama.cpp's own converter and llama-quantize,
# for `ADAINFER_GGUF_FIXTURES=DIR cargo test --test gguf` (CI cannot make them: no torch).
#
# Needs llama.cpp built by ../shared/tools/build-llama-cpp.sh (LLAMA_CPP, default
# ~/.cache/adainfer-peers/llama.cpp/src) and a Python venv (VENV) with numpy, sentencepiece,
# safetensors, transformers, protobuf, torch and `pip install -e $LLAMA_CPP/gguf-py`.
# The wrappers run convert_hf_to_gguf.py unchanged but for what the random models need (see
# their headers): an unknown BPE hash falls back to "gpt-2" / "qwen2", and random-gemma3's
# BPE tokenizer.json is given to the converter as is; for Gemma 3 the per-block sliding pattern
# is written from layer_types (the stock converter writes none, and llama.cpp then assumes
# every sixth block global — the `-swapat` files are the ones that match transformers).
set -euo pipefail
OUT="${1:?usage: make.sh OUT_DIR}"
LLAMA_CPP="${LLAMA_CPP:-$HOME/.cache/adainfer-peers/llama.cpp/src}"
VENV="${VENV:-/var/tmp/llama-peer/venv}"
HERE="$(cd "$(dirname "$0")" && pwd)"
REF="$HERE/../../../shared/reference"
QUANTIZE="$LLAMA_CPP/build/bin/llama-quantize"
export LLAMA_CPP
mkdir -p "$OUT"
for m in llama qwen2; do
  for t in f32 q8_0; do
    "$VENV/bin/python" "$HERE/convert_wrapper.py" "$REF/random-$m" --outtype $t \
      --outfile "$OUT/random-$m-$t.gguf"
  done
done
for t in Q4_0 Q4_1 Q4_K_M Q5_K_M Q6_K; do
  "$QUANTIZE" --allow-requantize "$OUT/random-llama-f32.gguf" \
    "$OUT/random-llama-$(echo $t | tr A-Z a-z).gguf" $t
done
for t in f32 q8_0; do
  GEMMA3_SWA_PATTERN_FROM_LAYER_TYPES=1 "$VENV/bin/python" "$HERE/convert_gemma3_wrapper.py" \
    "$REF/random-gemma3" --outtype $t --outfile "$OUT/random-gemma3-swapat-$t.gguf"
done
"$QUANTIZE" "$OUT/random-gemma3-swapat-f32.gguf" "$OUT/random-gemma3-swapat-q4_k_m.gguf" Q4_K_M
echo "fixtures in $OUT"
