import json, torch
from safetensors.torch import save_file
L=18
cfg = {
  "_sliding_window_pattern": 6,
  "architectures": ["Gemma3ForCausalLM"],
  "attention_bias": False, "attention_dropout": 0.0,
  "attn_logit_softcapping": None, "final_logit_softcapping": None,
  "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
  "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 640,
  "initializer_range": 0.02, "intermediate_size": 2048,
  "layer_types": ["full_attention" if (i+1) % 6 == 0 else "sliding_attention" for i in range(L)],
  "max_position_embeddings": 32768, "model_type": "gemma3_text",
  "num_attention_heads": 4, "num_hidden_layers": L, "num_key_value_heads": 1,
  "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06,
  "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                      "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
  "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
  "sliding_window": 512, "tie_word_embeddings": True,
  "torch_dtype": "bfloat16", "dtype": "bfloat16",
  "use_bidirectional_attention": False, "use_cache": True, "vocab_size": 262144,
}
json.dump(cfg, open("config.json", "w"), indent=2)
g = torch.Generator().manual_seed(270)
def mat(*s): return (torch.randn(*s, generator=g) * 0.02).to(torch.bfloat16)
def nrm(n): return (torch.randn(n, generator=g) * 0.1).to(torch.bfloat16)
t = {"model.embed_tokens.weight": mat(262144, 640)}
for i in range(L):
    p = f"model.layers.{i}."
    for n in ["input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"]:
        t[p+n+".weight"] = nrm(640)
    t[p+"self_attn.q_proj.weight"] = mat(1024, 640)
    t[p+"self_attn.k_proj.weight"] = mat(256, 640)
    t[p+"self_attn.v_proj.weight"] = mat(256, 640)
    t[p+"self_attn.o_proj.weight"] = mat(640, 1024)
    t[p+"self_attn.q_norm.weight"] = nrm(256)
    t[p+"self_attn.k_norm.weight"] = nrm(256)
    t[p+"mlp.gate_proj.weight"] = mat(2048, 640)
    t[p+"mlp.up_proj.weight"] = mat(2048, 640)
    t[p+"mlp.down_proj.weight"] = mat(640, 2048)
t["model.norm.weight"] = nrm(640)
save_file(t, "model.safetensors", metadata={"format": "pt"})
print(len(t), sum(v.numel() for v in t.values()))
