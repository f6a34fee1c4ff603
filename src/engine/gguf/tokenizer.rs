//! The tokenizer a GGUF file describes (its `tokenizer.ggml.*` metadata), built as a
//! `tokenizers::Tokenizer` whose ids follow llama.cpp's `llama-vocab.cpp`.
//!
//! * `tokenizer.ggml.model = "gpt2"`: byte-level BPE (`tokens` + ranked `merges`). The
//!   pre-tokenizer is llama.cpp's list of split regexes for `tokenizer.ggml.pre`, applied in
//!   order (each one splits the pieces the previous left, keeping matches and gaps), then the
//!   GPT-2 byte mapping. `llama3`-family values also set `ignore_merges` and default `add_bos`.
//! * `tokenizer.ggml.model = "llama"` (SentencePiece, e.g. Gemma): llama.cpp's SPM merge (the
//!   adjacent pair whose concatenation is the highest-scoring token merges first, the leftmost
//!   on ties) expressed as BPE merges ranked by that score, with `<0xXX>` byte fallback, `▁`
//!   for spaces and an optional `▁` prefix per text run (`add_space_prefix`). Checked against
//!   llama.cpp's `llama-tokenize` on Gemma-3-like GGUFs in `tests/fixtures/spm`.
//!
//! Token types: 2 (unknown) and 3 (control) become special added tokens (dropped by
//! `decode(.., true)`), 4 (user-defined) plain added tokens; all are matched on the raw text,
//! as llama.cpp's special-token partition does. Its `parse_special = false` is
//! `Tokenizer::set_encode_special_tokens(true)` (control tokens stay text, user-defined ones
//! still match). Types are first adjusted by text as llama.cpp's loader does (end-of-generation
//! and fill-in-the-middle markers become control). One difference remains: llama.cpp matches
//! the longest special token first over the whole text, `tokenizers` the leftmost-longest, so
//! they disagree when two *different* special tokens overlap (`ab`, `bcd` in `abcd`); runs of
//! one character, like Gemma's whitespace tokens, agree. `add_bos_token` / `add_eos_token`
//! become a template post-processor (`encode(text, true)`).
use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::Value;
use std::collections::HashMap;
use tokenizers::decoders::{
    byte_fallback::ByteFallback, byte_level::ByteLevel as ByteLevelDecoder, fuse::Fuse,
    sequence::Sequence as DecoderSequence, strip::Strip, DecoderWrapper,
};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{replace::Replace, Prepend, Sequence as NormSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};
use tokenizers::{AddedToken, NormalizerWrapper, SplitDelimiterBehavior, Tokenizer};

const K_MODEL: &str = "tokenizer.ggml.model";
const K_PRE: &str = "tokenizer.ggml.pre";
const K_TOKENS: &str = "tokenizer.ggml.tokens";
const K_TYPES: &str = "tokenizer.ggml.token_type";
const K_SCORES: &str = "tokenizer.ggml.scores";
const K_MERGES: &str = "tokenizer.ggml.merges";
const K_BOS: &str = "tokenizer.ggml.bos_token_id";
const K_EOS: &str = "tokenizer.ggml.eos_token_id";
const K_UNK: &str = "tokenizer.ggml.unknown_token_id";
const K_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
const K_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
const K_ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";

// llama.cpp's regexes (`llm_tokenizer_bpe`), verbatim.
const RE_GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const RE_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// One llama.cpp pre-tokenizer type: the `tokenizer.ggml.pre` values that select it, its
/// split regexes, and the vocab flags llama.cpp sets with it.
struct PreType {
    names: &'static [&'static str],
    regexes: &'static [&'static str],
    ignore_merges: bool,
    add_bos: bool,
}

const PRE_TYPES: &[PreType] = &[
    PreType {
        // LLAMA_VOCAB_PRE_TYPE_DEFAULT
        names: &["default"],
        regexes: &[
            r"[\p{P}\$\+<=>\^~\|]+",
            RE_GPT2,
            r"\p{N}+",
            "[0-9][0-9][0-9]",
        ],
        ignore_merges: false,
        add_bos: false,
    },
    PreType {
        // LLAMA_VOCAB_PRE_TYPE_GPT2 (llama.cpp spells it "gpt-2"; "gpt2" accepted as alias)
        names: &["gpt-2", "gpt2", "phi-2", "mpt", "olmo", "exaone4"],
        regexes: &[RE_GPT2],
        ignore_merges: false,
        add_bos: false,
    },
    PreType {
        // LLAMA_VOCAB_PRE_TYPE_SMOLLM / STARCODER / REFACT / COMMAND_R / CODESHELL / EXAONE / MINERVA:
        // every digit on its own, then GPT-2's regex.
        names: &[
            "smollm",
            "starcoder",
            "refact",
            "command-r",
            "codeshell",
            "exaone",
            "minerva-7b",
        ],
        regexes: &[r"\p{N}", RE_GPT2],
        ignore_merges: false,
        add_bos: false,
    },
    PreType {
        // LLAMA_VOCAB_PRE_TYPE_LLAMA3
        names: &[
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
        ],
        regexes: &[RE_LLAMA3],
        ignore_merges: true,
        add_bos: true,
    },
    PreType {
        // LLAMA_VOCAB_PRE_TYPE_DBRX / SMAUG: llama3's regex without its flags
        names: &["dbrx", "smaug-bpe"],
        regexes: &[RE_LLAMA3],
        ignore_merges: false,
        add_bos: false,
    },
    PreType {
        // LLAMA_VOCAB_PRE_TYPE_QWEN2 / STABLELM2 ("megrez" maps to QWEN2 too)
        names: &["qwen2", "deepseek-r1-qwen", "megrez", "stablelm2"],
        regexes: &[RE_QWEN2],
        ignore_merges: false,
        add_bos: false,
    },
    PreType {
        names: &["qwen35"],
        regexes: &[RE_QWEN35],
        ignore_merges: false,
        add_bos: false,
    },
];

/// The `tokenizer.ggml.pre` values this converter understands.
pub fn supported_pre_values() -> Vec<&'static str> {
    PRE_TYPES
        .iter()
        .flat_map(|p| p.names.iter().copied())
        .collect()
}

/// The tokenizer a GGUF file describes (`tokenizer.ggml.*` keys). Errors name the key and what is wrong.
pub fn tokenizer_from_gguf(metadata: &HashMap<String, Value>) -> Result<Tokenizer> {
    let md = Meta(metadata);
    let model = md
        .str(K_MODEL)?
        .ok_or_else(|| anyhow!("missing `{K_MODEL}`"))?;
    match model {
        "gpt2" => bpe_tokenizer(&md),
        "llama" => spm_tokenizer(&md),
        other => bail!("`{K_MODEL}` = {other:?} is not supported (supported: \"gpt2\", \"llama\")"),
    }
}

fn bpe_tokenizer(md: &Meta) -> Result<Tokenizer> {
    let pre = md.str(K_PRE)?.unwrap_or("default"); // llama.cpp's fallback when the key is absent
    let Some(pre_type) = PRE_TYPES.iter().find(|p| p.names.contains(&pre)) else {
        bail!(
            "`{K_PRE}` = {pre:?} is not supported (supported: {})",
            supported_pre_values().join(", ")
        )
    };
    let vocab = VocabInfo::read(md, false)?;
    let merges = md
        .str_array(K_MERGES)?
        .ok_or_else(|| anyhow!("missing `{K_MERGES}` (required for gpt2)"))?;
    let mut pairs = Vec::with_capacity(merges.len());
    for (i, m) in merges.iter().enumerate() {
        // As llama.cpp: split at the first space after the first character.
        let first = m.chars().next().map_or(0, char::len_utf8);
        let Some(pos) = m[first..].find(' ').map(|p| p + first) else {
            bail!("`{K_MERGES}`[{i}] = {m:?} has no space separating its two parts")
        };
        let (a, b) = (&m[..pos], &m[pos + 1..]);
        for part in [a, b, format!("{a}{b}").as_str()] {
            if !vocab.ids.contains_key(part) {
                bail!("`{K_MERGES}`[{i}] = {m:?}: {part:?} is not in `{K_TOKENS}`");
            }
        }
        pairs.push((a.to_string(), b.to_string()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab.bpe_vocab(), pairs)
        .ignore_merges(pre_type.ignore_merges)
        .build()
        .map_err(|e| anyhow!("building the BPE model: {e}"))?;
    let mut tok = Tokenizer::new(bpe);
    let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
    for re in pre_type.regexes {
        let split = Split::new(
            SplitPattern::Regex(re.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| anyhow!("pre-tokenizer regex for {pre:?} does not compile: {e}"))?;
        steps.push(split.into());
    }
    steps.push(ByteLevel::new(false, false, false).into());
    tok.with_pre_tokenizer(Some(PreSequence::new(steps)));
    tok.with_decoder(Some(ByteLevelDecoder::new(false, false, false)));
    finish(md, tok, &vocab, pre_type.add_bos, None)
}

fn spm_tokenizer(md: &Meta) -> Result<Tokenizer> {
    let vocab = VocabInfo::read(md, true)?;
    let n = vocab.tokens.len();
    // llama.cpp's SPM: merge the adjacent pair whose concatenation is the best-scoring token.
    // As BPE: every split of every token into two tokens is a merge, ranked by that score.
    let mut merges: Vec<(f32, u32, usize)> = Vec::new(); // (score, merged id, split byte)
    for (id, t) in vocab.tokens.iter().enumerate() {
        for (pos, _) in t.char_indices().skip(1) {
            if vocab.ids.contains_key(&t[..pos]) && vocab.ids.contains_key(&t[pos..]) {
                // `+ 0.0` makes -0.0 (SentencePiece's first merge) tie with 0.0, as in C++.
                merges.push((vocab.scores[id] + 0.0, id as u32, pos));
            }
        }
    }
    // llama.cpp pops the best-scoring pair, the leftmost on ties. BPE ranks cannot see
    // positions, so a tie goes to the longer token: what "leftmost" amounts to when a run grows
    // from the left (e.g. "\n", "\n\n", "\n\n\n" all scoring 0). Then by id, then by split.
    let len = |id: u32| vocab.tokens[id as usize].len();
    merges.sort_by(|x, y| {
        y.0.total_cmp(&x.0)
            .then(len(y.1).cmp(&len(x.1)))
            .then(x.1.cmp(&y.1))
            .then(x.2.cmp(&y.2))
    });
    let pairs = merges
        .iter()
        .map(|&(_, id, pos)| {
            let t = &vocab.tokens[id as usize];
            (t[..pos].to_string(), t[pos..].to_string())
        })
        .collect();
    let unk = md.id(K_UNK, n)?.unwrap_or(0); // llama.cpp's SPM default
    let bpe = BPE::builder()
        .vocab_and_merges(vocab.bpe_vocab(), pairs)
        .byte_fallback(true)
        .unk_token(vocab.tokens[unk as usize].clone())
        .build()
        .map_err(|e| anyhow!("building the SPM model: {e}"))?;
    let mut tok = Tokenizer::new(bpe);
    let add_space_prefix = md.bool(K_ADD_SPACE_PREFIX)?.unwrap_or(true);
    let escape = Replace::new(" ", "▁").map_err(|e| anyhow!("{e}"))?;
    let mut norm: Vec<NormalizerWrapper> = Vec::new();
    let mut dec: Vec<DecoderWrapper> =
        vec![Replace::new("▁", " ").map_err(|e| anyhow!("{e}"))?.into()];
    if add_space_prefix {
        norm.push(Prepend::new("▁".to_string()).into());
    }
    norm.push(escape.into());
    dec.extend([ByteFallback::new().into(), Fuse::new().into()]);
    if add_space_prefix {
        dec.push(Strip::new(' ', 1, 0).into());
    }
    tok.with_normalizer(Some(NormSequence::new(norm)));
    tok.with_decoder(Some(DecoderSequence::new(dec)));
    finish(md, tok, &vocab, true, Some((1, 2)))
}

/// Added tokens from the token types, then the bos/eos post-processor. `spm_defaults` are
/// llama.cpp's bos/eos ids for SPM vocabs that do not name them.
fn finish(
    md: &Meta,
    mut tok: Tokenizer,
    vocab: &VocabInfo,
    default_add_bos: bool,
    spm_defaults: Option<(u32, u32)>,
) -> Result<Tokenizer> {
    let n = vocab.tokens.len();
    let mut added = Vec::new();
    for (t, &ty) in vocab.tokens.iter().zip(&vocab.types) {
        if t.is_empty() || !matches!(ty, 2..=4) {
            continue;
        }
        // Matched on the raw text (llama.cpp's partition); never normalized, never stripped.
        let special = ty != 4;
        added.push(AddedToken::from(t.clone(), special).normalized(false));
    }
    tok.add_tokens(&added);

    let add_bos = md.bool(K_ADD_BOS)?.unwrap_or(default_add_bos);
    let add_eos = md.bool(K_ADD_EOS)?.unwrap_or(false);
    let bos = md
        .id(K_BOS, n)?
        .or(spm_defaults.map(|d| d.0).filter(|&d| (d as usize) < n));
    let eos = md
        .id(K_EOS, n)?
        .or(spm_defaults.map(|d| d.1).filter(|&d| (d as usize) < n));
    let mut single = Vec::new();
    let mut specials = Vec::new();
    for (on, id, key, add_key, name) in [
        (add_bos, bos, K_BOS, K_ADD_BOS, "BOS"),
        (add_eos, eos, K_EOS, K_ADD_EOS, "EOS"),
    ] {
        if !on {
            continue;
        }
        let id = id.ok_or_else(|| anyhow!("`{add_key}` is true but `{key}` is not set"))?;
        let text = vocab.tokens[id as usize].clone();
        specials.push(
            SpecialToken::new(name.to_string(), vec![id], vec![text])
                .map_err(|e| anyhow!("{e}"))?,
        );
        single.push(name);
    }
    if !specials.is_empty() {
        let has_bos = add_bos as usize;
        let mut single_t: Vec<String> = single.iter().map(|s| s.to_string()).collect();
        single_t.insert(has_bos, "$A:0".into());
        let mut pair_t = single_t.clone();
        pair_t.extend(single.iter().map(|s| format!("{s}:1")));
        pair_t.insert(single_t.len() + has_bos, "$B:1".into());
        let pp = TemplateProcessing::builder()
            .try_single(single_t)
            .and_then(|b| b.try_pair(pair_t))
            .map_err(|e| anyhow!("post-processor template: {e}"))?
            .special_tokens(specials)
            .build()
            .map_err(|e| anyhow!("post-processor: {e}"))?;
        tok.with_post_processor(Some(pp));
    }
    Ok(tok)
}

/// Tokens, their types and (SPM) scores, validated.
struct VocabInfo {
    tokens: Vec<String>,
    types: Vec<i64>,
    scores: Vec<f32>,
    ids: Vocab, // `tokenizers`' own (fast-hashing) map, also what BPE takes
}

impl VocabInfo {
    fn read(md: &Meta, need_scores: bool) -> Result<Self> {
        let tokens: Vec<String> = md
            .str_array(K_TOKENS)?
            .ok_or_else(|| anyhow!("missing `{K_TOKENS}`"))?
            .into_iter()
            .enumerate()
            // llama.cpp renames empty tokens (they could never be matched anyway).
            .map(|(i, t)| match t {
                "" => format!("[EMPTY_{i}]"),
                t => t.to_string(),
            })
            .collect();
        let n = tokens.len();
        if n == 0 || n > u32::MAX as usize {
            bail!("`{K_TOKENS}` has {n} entries");
        }
        let mut ids = Vocab::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            if let Some(prev) = ids.insert(t.clone(), i as u32) {
                bail!("`{K_TOKENS}`[{i}] = {t:?} repeats `{K_TOKENS}`[{prev}]");
            }
        }
        // Like llama.cpp: entries past the token count are ignored, too few is an error.
        let per_token = |key: &str| -> Result<Option<&[Value]>> {
            let Some(v) = md.get(key) else {
                return Ok(None);
            };
            let arr = array(v, key)?;
            if arr.len() < n {
                bail!("`{key}` has {} entries but `{K_TOKENS}` has {n}", arr.len());
            }
            Ok(Some(&arr[..n]))
        };
        let mut types = match per_token(K_TYPES)? {
            None => vec![1; n],
            Some(arr) => arr
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    int(x).ok_or_else(|| anyhow!("`{K_TYPES}`[{i}] is not an integer: {x:?}"))
                })
                .collect::<Result<Vec<_>>>()?,
        };
        retype_like_llama_cpp(md, &ids, &mut types);
        let scores = match per_token(K_SCORES)? {
            None if need_scores => bail!("missing `{K_SCORES}` (required for the llama/SPM model)"),
            None => Vec::new(),
            Some(arr) => arr
                .iter()
                .enumerate()
                .map(|(i, x)| match x {
                    Value::F32(f) => Ok(*f),
                    Value::F64(f) => Ok(*f as f32),
                    // llama.cpp also takes integer scores.
                    _ => int(x)
                        .map(|s| s as f32)
                        .ok_or_else(|| anyhow!("`{K_SCORES}`[{i}] is not a number: {x:?}")),
                })
                .collect::<Result<Vec<_>>>()?,
        };
        Ok(Self {
            tokens,
            types,
            scores,
            ids,
        })
    }

    fn bpe_vocab(&self) -> Vocab {
        self.ids.clone()
    }
}

/// Token texts llama.cpp's vocab loader (`llama_vocab::impl::load`) makes control tokens
/// whatever their GGUF type: the end-of-generation markers.
#[rustfmt::skip]
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~[",
];

/// Ids of the end-of-generation markers the vocabulary has: llama.cpp stops on these whatever
/// the metadata's eos / eot ids say (a Gemma file may name only `<eos>`, not `<end_of_turn>`).
pub fn end_of_generation_ids(tokenizer: &Tokenizer) -> Vec<u32> {
    EOG_TEXTS
        .iter()
        .filter_map(|t| tokenizer.token_to_id(t))
        .collect()
}

/// Fill-in-the-middle markers llama.cpp also makes control, unless the GGUF names that
/// marker's id (the keys).
#[rustfmt::skip]
const FIM_TEXTS: &[(&[&str], &[&str])] = &[
    (&["tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.prefix_token_id"],
     &["<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
       "<|code_prefix|>", "<|prefix|>"]),
    (&["tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.suffix_token_id"],
     &["<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
       "<|code_suffix|>", "<|suffix|>"]),
    (&["tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.middle_token_id"],
     &["<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
       "<|code_middle|>", "<|middle|>"]),
    (&["tokenizer.ggml.fim_pad_token_id"],
     &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"]),
    (&["tokenizer.ggml.fim_rep_token_id"],
     &["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"]),
    (&["tokenizer.ggml.fim_sep_token_id"], &["<|file_sep|>"]),
];

/// llama.cpp's retyping of tokens by their text: it decides which tokens are matched whole in
/// raw text, and which `parse_special = false` and decoding skip. (Its later exceptions for
/// gpt-oss, solar-open and Gemma 4 are left out: their pre-tokenizers are not supported here.)
fn retype_like_llama_cpp(md: &Meta, ids: &Vocab, types: &mut [i64]) {
    const CONTROL: i64 = 3;
    let mut to_control = |text: &str| {
        if let Some(&i) = ids.get(text) {
            types[i as usize] = CONTROL;
        }
    };
    for (keys, texts) in FIM_TEXTS {
        if !keys.iter().any(|k| md.get(k).is_some()) {
            texts.iter().for_each(|t| to_control(t));
        }
    }
    EOG_TEXTS.iter().for_each(|t| to_control(t));
}

/// Typed, key-naming access to the metadata.
struct Meta<'a>(&'a HashMap<String, Value>);

impl Meta<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }
    fn str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => bail!("`{key}` must be a string, found {}", kind(v)),
        }
    }
    fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => bail!("`{key}` must be a bool, found {}", kind(v)),
        }
    }
    /// A token id, checked against the vocabulary size.
    fn id(&self, key: &str, n_tokens: usize) -> Result<Option<u32>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let i = int(v).ok_or_else(|| anyhow!("`{key}` must be an integer, found {}", kind(v)))?;
        if i < 0 || i as u64 >= n_tokens as u64 {
            bail!("`{key}` = {i} is outside the vocabulary (0..{n_tokens})");
        }
        Ok(Some(i as u32))
    }
    fn str_array(&self, key: &str) -> Result<Option<Vec<&str>>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let arr = array(v, key)?;
        let out = arr
            .iter()
            .enumerate()
            .map(|(i, x)| match x {
                Value::String(s) => Ok(s.as_str()),
                _ => Err(anyhow!("`{key}`[{i}] must be a string, found {}", kind(x))),
            })
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("reading `{key}`"))?;
        Ok(Some(out))
    }
}

fn array<'a>(v: &'a Value, key: &str) -> Result<&'a [Value]> {
    match v {
        Value::Array(a) => Ok(a),
        _ => bail!("`{key}` must be an array, found {}", kind(v)),
    }
}

fn int(v: &Value) -> Option<i64> {
    Some(match *v {
        Value::U8(x) => x.into(),
        Value::I8(x) => x.into(),
        Value::U16(x) => x.into(),
        Value::I16(x) => x.into(),
        Value::U32(x) => x.into(),
        Value::I32(x) => x.into(),
        Value::U64(x) => i64::try_from(x).ok()?,
        Value::I64(x) => x,
        _ => return None,
    })
}

fn kind(v: &Value) -> String {
    match v {
        Value::String(_) => "a string".into(),
        Value::Array(a) => format!("an array of {}", a.len()),
        Value::Bool(_) => "a bool".into(),
        other => format!("{:?}", other.value_type()),
    }
}

#[cfg(test)]
#[path = "tokenizer_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "tokenizer_spm_tests.rs"]
mod spm_tests;
