#!/usr/bin/env bash
# lm-evaluation-harness as a client of `adainfer serve`: SmolLM2-135M-Instruct (Q4_1 GGUF),
# dense and with AdaInfer on (the certified SST-2 plugin config), through the harness's own
# `local-completions` (loglikelihood: token-id prompts, echo, logprobs) and
# `local-chat-completions` (generate_until) clients. Tasks are local YAMLs
# (scripts/lm-eval-tasks/) reading ../shared/data: no dataset hub.
#
#   scripts/lm-eval.sh [LIMIT]        # default 100 docs per task
#
# Writes docs/results/lm-eval-dense.txt and docs/results/lm-eval-adaptive.txt.
# Env: LM_EVAL_VENV (default /var/tmp/adainfer-lm-eval-venv), CARGO_TARGET_DIR, PORT (8093).
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=${1:-100}
VENV=${LM_EVAL_VENV:-/var/tmp/adainfer-lm-eval-venv}
PORT=${PORT:-8093}
TARGET=${CARGO_TARGET_DIR:-target}
GGUF_DIR=../shared/models/smollm2-135m-instruct
TOKENIZER=$(cd "$GGUF_DIR/from-transformers" && pwd)
LM_EVAL_VERSION=0.4.13

if [ ! -x "$VENV/bin/lm_eval" ] || ! "$VENV/bin/pip" show lm-eval 2>/dev/null | grep -q "^Version: $LM_EVAL_VERSION$"; then
    python3 -m venv "$VENV"
    # [api]: the HTTP clients; transformers: the HF tokenizer (no torch needed for it).
    "$VENV/bin/pip" install -q "lm-eval[api]==$LM_EVAL_VERSION" "transformers>=4.40"
fi
cargo build --release -q
BIN="$TARGET/release/adainfer"

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export HF_HOME=${HF_HOME:-/var/tmp/adainfer-lm-eval-hf} TOKENIZERS_PARALLELISM=false
mkdir -p docs/results

SERVER=
stop_server() { if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; SERVER=; fi; }
trap stop_server EXIT

run() { # name, extra serve args...
    local name=$1; shift
    local out=docs/results/lm-eval-$name.txt
    "$BIN" serve --config engine-configs/smollm2-135m-instruct.toml --port "$PORT" "$@" \
        2> "/var/tmp/adainfer-lm-eval-serve-$name.log" &
    SERVER=$!
    for _ in $(seq 120); do
        curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break
        sleep 1
    done
    local common="model=smollm2-135m-instruct,num_concurrent=1,max_retries=1,timeout=600"
    {
        echo "# scripts/lm-eval.sh $LIMIT: $name ($(date -u +%FT%TZ)); lm-eval $LM_EVAL_VERSION"
        echo "# adainfer serve --config engine-configs/smollm2-135m-instruct.toml $*"
        echo
        echo "## local-completions (loglikelihood)"
        "$VENV/bin/lm_eval" --model local-completions \
            --model_args "$common,base_url=http://127.0.0.1:$PORT/v1/completions,tokenizer=$TOKENIZER,tokenizer_backend=huggingface,tokenized_requests=True" \
            --include_path scripts/lm-eval-tasks \
            --tasks adainfer_sst2,adainfer_agnews,adainfer_csqa,adainfer_mmlu \
            --limit "$LIMIT" --seed 1234 2>&1 | grep -v -E "^\s*[0-9]+%|it/s\]|s/it\]"
        echo
        echo "## local-chat-completions (generate_until)"
        "$VENV/bin/lm_eval" --model local-chat-completions --apply_chat_template \
            --model_args "$common,base_url=http://127.0.0.1:$PORT/v1/chat/completions" \
            --include_path scripts/lm-eval-tasks --tasks adainfer_sst2_chat \
            --limit "$LIMIT" --seed 1234 2>&1 | grep -v -E "^\s*[0-9]+%|it/s\]|s/it\]"
        echo
        echo "## server /metrics after the run"
        curl -s "http://127.0.0.1:$PORT/metrics" | grep -E "^adainfer_(requests_total|average_exit_layer|layers_saved_total)"
    } > "$out"
    stop_server
    echo "wrote $out"
}

run dense --dense
run adaptive --adaptive plugin-configs/smollm2-135m-instruct-sst2-svm.toml
