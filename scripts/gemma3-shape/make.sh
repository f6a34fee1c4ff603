#!/usr/bin/env bash
# A GGUF with Gemma 3 270M's exact shape (18 × 640, head_dim 256, 262,144-token vocabulary, every
# sixth block global, window 512) and random bf16 weights — no model hub is reachable here — then
# Q8_0 and Q4_K_M by llama-quantize, for `adainfer bench --model … --llama-bench …`.
# Needs the venv and llama.cpp of ../gguf-fixtures/make.sh (VENV, LLAMA_CPP).
set -euo pipefail
OUT="${1:?usage: make.sh OUT_DIR}"
LLAMA_CPP="${LLAMA_CPP:-$HOME/.cache/adainfer-peers/llama.cpp/src}"
VENV="${VENV:-/var/tmp/llama-peer/venv}"
HERE="$(cd "$(dirname "$0")" && pwd)"
export LLAMA_CPP
mkdir -p "$OUT"
cp "$HERE/../../../shared/reference/random-gemma3/tokenizer.json" "$OUT/tokenizer.json"
(cd "$OUT" && "$VENV/bin/python" "$HERE/make_weights.py")
# The converter trims the embedding to the tokenizer's 4,097 entries; the pre-wrapper keeps all
# 262,144 rows, as the real model has.
"$VENV/bin/python" "$HERE/convert_keep_full_vocab.py" "$OUT" --outtype bf16 \
  --outfile "$OUT/gemma3-270m-shape-bf16.gguf"
rm "$OUT/model.safetensors"
for t in Q8_0 Q4_K_M; do
  "$LLAMA_CPP/build/bin/llama-quantize" "$OUT/gemma3-270m-shape-bf16.gguf" \
    "$OUT/gemma3-270m-shape-$(echo $t | tr A-Z a-z).gguf" $t
done
