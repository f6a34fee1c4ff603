# Runs llama.cpp's convert_hf_to_gguf.py unchanged for the random Gemma 3 reference model
# (/work/shared/reference/random-gemma3: Gemma3ForCausalLM, model_type gemma3_text, byte-level BPE tokenizer.json,
# no tokenizer.model, no tokenizer_config.json). Two runtime patches, nothing else:
#
# 1. transformers 5.x AutoTokenizer maps model_type gemma3_text to GemmaTokenizer, which rebuilds the tokenizer
#    pipeline Gemma-style (Metaspace/<unk>/<bos>) and fails on this vocab ("Unk token `<unk>` not found").
#    The HF reference (reference.json input_ids) was tokenized with the raw tokenizer.json (checked: identical to
#    tokenizers.Tokenizer.from_file and PreTrainedTokenizerFast(tokenizer_file=...) for all cases, no BOS).
#    So for a model dir that has tokenizer.json but neither tokenizer.model nor tokenizer_config.json,
#    AutoTokenizer.from_pretrained returns PreTrainedTokenizerFast(tokenizer_file=tokenizer.json).
# 2. An unrecognised BPE pre-tokenizer hash falls back to "gpt-2" (tokenizer.json pre_tokenizer is plain
#    ByteLevel(use_regex=True) = GPT-2 regex), exactly as convert_wrapper.py does.
#
# Gemma3Model.set_vocab() in this llama.cpp version already uses _set_vocab_gpt2() when tokenizer.model is absent,
# and Gemma3ForCausalLM is registered (conversion/gemma.py:125), so the rest of the Gemma3 conversion
# (norm +1 shift, rope/sliding-window metadata, embed row trimming) runs untouched.
import os, runpy, sys
from pathlib import Path

SRC = os.environ.get("LLAMA_CPP", os.path.expanduser("~/.cache/adainfer-peers/llama.cpp/src"))
sys.path.insert(0, SRC)
sys.argv[0] = os.path.join(SRC, "convert_hf_to_gguf.py")

import transformers
from transformers import PreTrainedTokenizerFast

_orig_auto = transformers.AutoTokenizer.from_pretrained.__func__


def _auto_from_pretrained(cls, path, *args, **kwargs):
    p = Path(path)
    if (p / "tokenizer.json").is_file() and not (p / "tokenizer.model").is_file() \
            and not (p / "tokenizer_config.json").is_file():
        print(f"wrapper: AutoTokenizer({p}) -> PreTrainedTokenizerFast(tokenizer_file=tokenizer.json)", file=sys.stderr)
        return PreTrainedTokenizerFast(tokenizer_file=str(p / "tokenizer.json"))
    return _orig_auto(cls, path, *args, **kwargs)


transformers.AutoTokenizer.from_pretrained = classmethod(_auto_from_pretrained)

import conversion.base as base

_orig_pre = base.TextModel.get_vocab_base_pre


def _patched_pre(self, tokenizer):
    try:
        return _orig_pre(self, tokenizer)
    except NotImplementedError as e:
        base.logger.warning(f"wrapper: {e}; using tokenizer.ggml.pre = 'gpt-2'")
        return "gpt-2"


base.TextModel.get_vocab_base_pre = _patched_pre

# 3. OPTIONAL (env GEMMA3_SWA_PATTERN_FROM_LAYER_TYPES=1, off by default): also write
#    gemma3.attention.sliding_window_pattern = [layer_type == "sliding_attention" ...] (BOOL array) from config.json
#    layer_types. The stock Gemma3Model writes no pattern key, and llama.cpp then hard-codes "every 6th layer is
#    global" (src/models/gemma3.cpp:7 load_swa_pattern(ml, 6)); this random model's layer_types has layers 2 and 5
#    global, so without the key llama.cpp treats layer 2 as sliding. llama.cpp reads the array form
#    (src/llama-model.cpp load_swa_pattern: ml.get_arr(LLM_KV_ATTENTION_SLIDING_WINDOW_PATTERN, is_swa_impl)).
if os.environ.get("GEMMA3_SWA_PATTERN_FROM_LAYER_TYPES") == "1":
    import conversion.gemma as gemma
    _orig_params = gemma.Gemma3Model.set_gguf_parameters

    def _params_with_pattern(self):
        _orig_params(self)
        lt = self.hparams.get("layer_types")
        if lt:
            pat = [t == "sliding_attention" for t in lt]
            base.logger.warning(f"wrapper: writing sliding_window_pattern from layer_types: {pat}")
            self.gguf_writer.add_sliding_window_pattern(pat)

    gemma.Gemma3Model.set_gguf_parameters = _params_with_pattern

runpy.run_path(sys.argv[0], run_name="__main__")
