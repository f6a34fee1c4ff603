# Pre-wrapper around ../gguf-fixtures/convert_gemma3_wrapper.py (unchanged).
# One extra runtime patch: Gemma3Model.modify_tensors trims token_embd to len(tokenizer.json vocab)+len(added_tokens)
# (=4097 here) while get_vocab_base() pads the token list to config vocab_size (262144) with [PADi] tokens, so
# llama.cpp rejects the file (check_tensor_dims: token_embd expected 640x262144, got 640x4097). For the
# Gemma-3-270M-shaped benchmark fixture we keep all vocab_size embedding rows (as real gemma-3-270m has).
# Everything else (norm +1 shift etc.) goes through the stock code.
import os, sys
SRC = os.environ.get("LLAMA_CPP", os.path.expanduser("~/.cache/adainfer-peers/llama.cpp/src"))
sys.path.insert(0, SRC)
import conversion.gemma as gemma

_orig_mt = gemma.Gemma3Model.modify_tensors

def _mt(self, data_torch, name, bid):
    if "embed_tokens.weight" in name and data_torch.shape[0] == self.hparams["vocab_size"]:
        sys.stderr.write(f"pre-wrapper: keeping all {data_torch.shape[0]} rows of {name}\n")
        yield from super(gemma.Gemma3Model, self).modify_tensors(data_torch, name, bid)  # no norm shift applies here
    else:
        yield from _orig_mt(self, data_torch, name, bid)

gemma.Gemma3Model.modify_tensors = _mt
import runpy
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gguf-fixtures", "convert_gemma3_wrapper.py"), run_name="__main__")
