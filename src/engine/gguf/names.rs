//! llama.cpp's tensor names (`blk.N.attn_q.weight`, `token_embd.weight`, …) for HF names.
//! The top-level names are shared; each family passes its table of block parts.

/// The GGUF name of `hf` (`model.layers.N.{part}.{weight|bias}` or a top-level name), with
/// `block` mapping HF block parts to llama.cpp's.
pub fn llama_cpp_name(hf: &str, block: &[(&str, &str)]) -> Option<String> {
    const TOP: &[(&str, &str)] = &[
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, g)) = TOP.iter().find(|(h, _)| *h == hf) {
        return Some(g.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (index, rest) = rest.split_once('.')?;
    let (part, kind) = rest.rsplit_once('.')?;
    let (_, g) = block.iter().find(|(h, _)| *h == part)?;
    Some(format!("blk.{index}.{g}.{kind}"))
}
