# Runs llama.cpp's convert_hf_to_gguf.py unchanged, except that an unrecognised BPE pre-tokenizer hash
# falls back to a fixed llama.cpp pre-tokenizer type. The random reference models share a custom 4096-token
# byte-level BPE whose tokenizer.json pre_tokenizer is plain ByteLevel(use_regex=True) = GPT-2's regex -> "gpt-2".
# Exception: for model_type qwen2, transformers 5.x AutoTokenizer returns Qwen2Tokenizer, which replaces the
# pre-tokenizer with Qwen2's regex (single digits) -> "qwen2" (this is what the HF reference was tokenized with).
import os, runpy, sys
SRC = os.environ.get("LLAMA_CPP", os.path.expanduser("~/.cache/adainfer-peers/llama.cpp/src"))
sys.path.insert(0, SRC)
sys.argv[0] = os.path.join(SRC, "convert_hf_to_gguf.py")
import conversion.base as base
_orig = base.TextModel.get_vocab_base_pre
def _patched(self, tokenizer):
    try:
        return _orig(self, tokenizer)
    except NotImplementedError as e:
        pre = "qwen2" if self.model_arch == base.gguf.MODEL_ARCH.QWEN2 else "gpt-2"
        base.logger.warning(f"wrapper: {e}; using tokenizer.ggml.pre = {pre!r}")
        return pre
base.TextModel.get_vocab_base_pre = _patched
runpy.run_path(sys.argv[0], run_name="__main__")
