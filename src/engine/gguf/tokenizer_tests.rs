//! Tests of the GGUF tokenizer converter: the real SmolLM2 GGUF against transformers'
//! tokenizer.json and reference ids, pre-tokenizer splits, SPM against a direct
//! implementation of llama.cpp's algorithm, and hostile metadata.
use super::*;
use std::path::{Path, PathBuf};
use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

fn model_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/models/smollm2-135m-instruct");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipping: {} is missing", dir.display());
        None
    }
}

fn smollm_metadata(dir: &Path) -> HashMap<String, Value> {
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut f = std::fs::File::open(&path).expect("open gguf");
    candle_core::quantized::gguf_file::Content::read(&mut f)
        .expect("read gguf")
        .metadata
}

/// Varied text: digits, unicode, code, whitespace runs, contractions, inline special tokens.
const TEXTS: &[&str] = &[
    "The capital of France is",
    "Hello, world!",
    "",
    " ",
    "   ",
    "\n",
    "\n\n\n",
    "\t\tindented\ttabs",
    "  leading spaces",
    "trailing spaces   ",
    " both ",
    "1234567890",
    "3.14159 and 2,718,281,828",
    "Call 555-0123 now, or +1 (800) 999",
    "year 2024: 12 months, 365 days",
    "mixed 123abc456 def7",
    "I'm sure you'll see they've done it, didn't they? We'd go.",
    "IT'S WE'LL THEY'RE",
    "naïve café résumé Ångström",
    "日本語のテキストです。",
    "中文分词测试，标点符号！",
    "한국어 텍스트",
    "Привет, мир!",
    "emoji 😀🎉👍🏽 family 👨‍👩‍👧 flag 🇫🇷",
    "fn main() {\n    println!(\"hi\");\n}\n",
    "def f(x):\n\treturn x**2  # square\n",
    "if (a && b) || c != d { return; }",
    "    four spaces then text",
    "\r\nwindows\r\nline",
    "....!!!???---",
    "http://example.com/path?q=1&r=2#frag",
    "zero\u{200b}width and nbsp\u{a0}here",
    "ﬁ ligature, ß ẞ",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more",
    "<|im_start|><|im_end|>",
    "a<|im_start|>b c<|im_end|>",
    "<jupyter_code>print(1)<jupyter_output>",
    "< |im_start| > <|im_start <im_start|>",
    "x",
    "!",
];

/// Where SmolLM2's GGUF and transformers' GGUF-derived tokenizer.json disagree: llama.cpp's
/// `smollm` pre-tokenizer isolates every `\p{N}` character *before* GPT-2's regex, so a
/// whitespace run before a digit stays whole (`"x  1"` → `x ĠĠ 1`, tokenizer.json: `x Ġ Ġ 1`)
/// and a space never joins a numeric character (`" ½"` → `Ġ ½`, tokenizer.json: `Ġ½`, a
/// token of this vocabulary). tokenizer.json is plain ByteLevel: the conversion lost the
/// original SmolLM2 Digits(individual) step, and the original agrees with llama.cpp. (No
/// multi-character token holds an ASCII digit, so plain digit runs never differ.)
const NUMERIC_DIVERGENCES: &[&str] = &[
    "x  1",
    "a   42  b",
    "n =  3.5",
    "    1234",
    "½ ² Ⅻ ① ٣",
    "a ² b",
];

#[test]
fn smollm_ids_match_transformers_and_reference() {
    let Some(dir) = model_dir() else { return };
    let ours = tokenizer_from_gguf(&smollm_metadata(&dir)).expect("build tokenizer");
    let hf =
        Tokenizer::from_file(dir.join("from-transformers/tokenizer.json")).expect("tokenizer.json");
    // transformers' tokenizer with the original SmolLM2 pre-tokenizer (Digits + ByteLevel).
    let mut original = hf.clone();
    original.with_pre_tokenizer(Some(PreSequence::new(vec![
        tokenizers::pre_tokenizers::digits::Digits::new(true).into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    assert_eq!(ours.get_vocab_size(true), hf.get_vocab_size(true));
    let ids =
        |t: &Tokenizer, s: &str, special: bool| t.encode(s, special).unwrap().get_ids().to_vec();
    for &s in TEXTS {
        for special in [false, true] {
            assert_eq!(
                ids(&ours, s, special),
                ids(&hf, s, special),
                "vs tokenizer.json: {s:?}"
            );
            assert_eq!(
                ids(&ours, s, special),
                ids(&original, s, special),
                "vs original: {s:?}"
            );
        }
    }
    for &s in NUMERIC_DIVERGENCES {
        assert_eq!(
            ids(&ours, s, false),
            ids(&original, s, false),
            "vs original: {s:?}"
        );
        assert_ne!(
            ids(&ours, s, false),
            ids(&hf, s, false),
            "expected divergence: {s:?}"
        );
    }
    assert_eq!(ids(&ours, "x  1", false), [104, 256, 33]); // x, ĠĠ, 1 (llama.cpp's pieces)

    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let cases = reference["cases"].as_array().expect("cases");
    assert!(cases.len() >= 4);
    for case in cases {
        let prompt = case["prompt"].as_str().unwrap();
        let want: Vec<u32> = case["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            ids(&ours, prompt, true),
            want,
            "reference ids for {prompt:?}"
        );
    }
}

#[test]
fn smollm_specials_and_decode() {
    let Some(dir) = model_dir() else { return };
    let ours = tokenizer_from_gguf(&smollm_metadata(&dir)).unwrap();
    assert_eq!(ours.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(ours.token_to_id("<|im_end|>"), Some(2));
    // add_bos_token is false in this file: no post-processor additions.
    assert_eq!(
        ours.encode("Hi", true).unwrap().get_ids(),
        ours.encode("Hi", false).unwrap().get_ids()
    );
    for &s in TEXTS.iter().chain(NUMERIC_DIVERGENCES) {
        let enc = ours.encode(s, true).unwrap();
        assert_eq!(
            ours.decode(enc.get_ids(), false).unwrap(),
            s,
            "round trip {s:?}"
        );
    }
    let chat = "<|im_start|>user\nHi<|im_end|>\n";
    let enc = ours.encode(chat, true).unwrap();
    assert_eq!(ours.decode(enc.get_ids(), true).unwrap(), "user\nHi\n");
}

fn pieces(tok: &Tokenizer, s: &str) -> Vec<String> {
    let mut pts = PreTokenizedString::from(s);
    tok.get_pre_tokenizer()
        .unwrap()
        .pre_tokenize(&mut pts)
        .unwrap();
    let byte_chars: HashMap<char, u8> = (0..=255u8).map(|b| (byte_level_encode(b), b)).collect();
    pts.get_splits(OffsetReferential::Original, OffsetType::Byte)
        .into_iter()
        .map(|(p, _, _)| String::from_utf8(p.chars().map(|c| byte_chars[&c]).collect()).unwrap())
        .collect()
}

/// GPT-2's byte → char map.
fn byte_level_encode(b: u8) -> char {
    let printable = |b: u8| {
        (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
    };
    if printable(b) {
        return b as char;
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap()
}

/// A byte-level vocabulary (the 256 byte chars, no merges) under the given `pre`.
fn byte_vocab(pre: &str) -> HashMap<String, Value> {
    let tokens: Vec<Value> = (0..=255u8)
        .map(|b| Value::String(byte_level_encode(b).to_string()))
        .collect();
    HashMap::from([
        (K_MODEL.to_string(), Value::String("gpt2".into())),
        (K_PRE.to_string(), Value::String(pre.into())),
        (K_TOKENS.to_string(), Value::Array(tokens)),
        (K_MERGES.to_string(), Value::Array(vec![])),
    ])
}

#[test]
fn pre_tokenizer_splits_follow_llama_cpp() {
    let s = "Hello 12345 world's IT'S  x\n\n  y";
    let cases: &[(&str, &[&str])] = &[
        (
            "gpt2",
            &[
                "Hello", " 12345", " world", "'s", " IT", "'", "S", " ", " x", "\n\n ", " y",
            ],
        ),
        (
            "smollm",
            &[
                "Hello", " ", "1", "2", "3", "4", "5", " world", "'s", " IT", "'", "S", " ", " x",
                "\n\n ", " y",
            ],
        ),
        (
            "llama-bpe",
            &[
                "Hello", " ", "123", "45", " world", "'s", " IT", "'S", " ", " x", "\n\n", " ",
                " y",
            ],
        ),
        (
            "qwen2",
            &[
                "Hello", " ", "1", "2", "3", "4", "5", " world", "'s", " IT", "'S", " ", " x",
                "\n\n", " ", " y",
            ],
        ),
    ];
    for (pre, want) in cases {
        let mut md = byte_vocab(pre);
        md.insert(K_ADD_BOS.into(), Value::Bool(false));
        let tok = tokenizer_from_gguf(&md).unwrap();
        assert_eq!(pieces(&tok, s), *want, "pre = {pre}");
        let enc = tok.encode(s, false).unwrap();
        assert_eq!(
            enc.get_ids(),
            s.bytes().map(u32::from).collect::<Vec<_>>(),
            "pre = {pre}"
        );
        assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), s);
    }
    // "default": punctuation runs first, then GPT-2, then digit runs, then 3-digit groups.
    let tok = tokenizer_from_gguf(&byte_vocab("default")).unwrap();
    assert_eq!(
        pieces(&tok, "a, 1234!?"),
        ["a", ",", " ", "123", "4", "!?"].map(String::from)
    );
    for pre in supported_pre_values() {
        let mut md = byte_vocab(pre);
        md.insert(K_BOS.into(), Value::U32(0));
        let tok = tokenizer_from_gguf(&md).unwrap_or_else(|e| panic!("{pre}: {e:#}"));
        assert_eq!(
            tok.decode(tok.encode(s, false).unwrap().get_ids(), false)
                .unwrap(),
            s,
            "{pre}"
        );
    }
    // llama3 family: add_bos by default (needs a bos id), overridable by the key.
    let mut md = byte_vocab("llama3");
    assert!(format!("{:#}", tokenizer_from_gguf(&md).unwrap_err()).contains(K_BOS));
    md.insert(K_BOS.into(), Value::U32(33));
    assert_eq!(
        tokenizer_from_gguf(&md)
            .unwrap()
            .encode("a", true)
            .unwrap()
            .get_ids(),
        [33, 97]
    );
    md.insert(K_ADD_BOS.into(), Value::Bool(false));
    md.insert(K_ADD_EOS.into(), Value::Bool(true));
    md.insert(K_EOS.into(), Value::U32(34));
    let tok = tokenizer_from_gguf(&md).unwrap();
    assert_eq!(tok.encode("a", true).unwrap().get_ids(), [97, 34]);
    assert_eq!(
        tok.encode(("a", "b"), true).unwrap().get_ids(),
        [97, 34, 98, 34]
    );
}

/// A small SentencePiece vocabulary: specials, byte tokens, chars and merged pieces with
/// distinct scores.
fn spm_vocab(add_space_prefix: bool) -> (HashMap<String, Value>, Vec<(String, f32, i32)>) {
    let mut v: Vec<(String, f32, i32)> = vec![
        ("<unk>".into(), 0.0, 2),
        ("<s>".into(), 0.0, 3),
        ("</s>".into(), 0.0, 3),
        ("<ctl>".into(), 0.0, 3),
        ("<usr>".into(), 0.0, 4),
    ];
    v.extend((0..=255u32).map(|b| (format!("<0x{b:02X}>"), 0.0, 6)));
    let pieces = [
        "▁", "a", "b", "c", "d", "▁a", "ab", "bc", "abc", "▁ab", "cd", "dd", "▁▁", "bcd", "ca",
        "▁c", "▁abc", "▁d",
    ];
    for (i, p) in pieces.iter().enumerate() {
        // A deterministic, distinct shuffle of scores.
        v.push((p.to_string(), -((i * 7 % 19) as f32) - 1.0, 1));
    }
    let md = HashMap::from([
        (K_MODEL.to_string(), Value::String("llama".into())),
        (
            K_TOKENS.to_string(),
            Value::Array(v.iter().map(|t| Value::String(t.0.clone())).collect()),
        ),
        (
            K_SCORES.to_string(),
            Value::Array(v.iter().map(|t| Value::F32(t.1)).collect()),
        ),
        (
            K_TYPES.to_string(),
            Value::Array(v.iter().map(|t| Value::I32(t.2)).collect()),
        ),
        (
            K_ADD_SPACE_PREFIX.to_string(),
            Value::Bool(add_space_prefix),
        ),
        (K_UNK.to_string(), Value::U32(0)),
        (K_BOS.to_string(), Value::U32(1)),
        (K_EOS.to_string(), Value::U32(2)),
    ]);
    (md, v)
}

/// llama.cpp's SPM tokenization, written out directly: split on special tokens; per raw
/// fragment prefix a space (if enabled, at the start and after a special), escape spaces,
/// repeatedly merge the adjacent pair forming the best-scoring token (leftmost on ties),
/// byte-fall-back anything left outside the vocabulary.
fn spm_reference(vocab: &[(String, f32, i32)], text: &str, prefix: bool, bos: bool) -> Vec<u32> {
    let find = |s: &str| vocab.iter().position(|t| t.0 == s);
    let mut out: Vec<u32> = if bos { vec![1] } else { vec![] };
    let mut frags: Vec<(String, bool)> = vec![];
    let mut rest = text;
    while !rest.is_empty() {
        let hit = ["<ctl>", "<usr>"]
            .iter()
            .filter_map(|t| rest.find(t).map(|p| (p, *t)))
            .min();
        match hit {
            Some((p, t)) => {
                if p > 0 {
                    frags.push((rest[..p].to_string(), false));
                }
                frags.push((t.to_string(), true));
                rest = &rest[p + t.len()..];
            }
            None => {
                frags.push((rest.to_string(), false));
                rest = "";
            }
        }
    }
    let mut prev_special = true;
    for (f, special) in frags {
        if special {
            out.push(find(&f).unwrap() as u32);
            prev_special = true;
            continue;
        }
        let s = format!("{}{f}", if prefix && prev_special { " " } else { "" }).replace(' ', "▁");
        prev_special = false;
        let mut syms: Vec<String> = s.chars().map(String::from).collect();
        loop {
            let mut best: Option<(f32, usize)> = None;
            for i in 0..syms.len().saturating_sub(1) {
                if let Some(id) = find(&format!("{}{}", syms[i], syms[i + 1])) {
                    if best.is_none_or(|(sc, _)| vocab[id].1 > sc) {
                        best = Some((vocab[id].1, i));
                    }
                }
            }
            let Some((_, i)) = best else { break };
            let right = syms.remove(i + 1);
            syms[i].push_str(&right);
        }
        for sym in syms {
            match find(&sym) {
                Some(id) => out.push(id as u32),
                None => out.extend(
                    sym.bytes()
                        .map(|b| find(&format!("<0x{b:02X}>")).unwrap() as u32),
                ),
            }
        }
    }
    out
}

#[test]
fn spm_matches_llama_cpp_algorithm() {
    let mut seed = 12345u64;
    let mut rand = |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize % n
    };
    let alphabet = [
        "a", "b", "c", "d", " ", " ", "é", "\n", "<ctl>", "<usr>", "dd", "abc",
    ];
    for prefix in [true, false] {
        let (md, vocab) = spm_vocab(prefix);
        let tok = tokenizer_from_gguf(&md).unwrap();
        for _ in 0..300 {
            let s: String = (0..rand(14))
                .map(|_| alphabet[rand(alphabet.len())])
                .collect();
            let got = tok.encode(s.as_str(), true).unwrap().get_ids().to_vec();
            assert_eq!(
                got,
                spm_reference(&vocab, &s, prefix, true),
                "text {s:?}, prefix {prefix}"
            );
            let plain = spm_reference(&vocab, &s, prefix, false);
            assert_eq!(tok.encode(s.as_str(), false).unwrap().get_ids(), plain);
            // Decoding gives the text back (less the dummy prefix) when no special precedes text.
            if !s.contains('<') {
                assert_eq!(tok.decode(&plain, false).unwrap(), s, "decode {s:?}");
            }
        }
        assert_eq!(
            tok.decode(
                &tok.encode("ab<ctl>c", false).unwrap().get_ids().to_vec(),
                true
            )
            .unwrap()
            .replace(' ', ""),
            "abc"
        );
    }
}

fn err_of(md: &HashMap<String, Value>) -> String {
    format!(
        "{:#}",
        tokenizer_from_gguf(md).expect_err("hostile metadata must be refused")
    )
}

#[test]
fn hostile_metadata_is_refused_cleanly() {
    let base = || {
        let mut md = byte_vocab("gpt2");
        let mut toks = match md.remove(K_TOKENS) {
            Some(Value::Array(t)) => t,
            _ => unreachable!(),
        };
        toks.push(Value::String("ab".into())); // id 256
        toks.push(Value::String("<|end|>".into())); // id 257
        let mut types = vec![Value::I32(1); 257];
        types.push(Value::I32(3));
        md.insert(K_TOKENS.into(), Value::Array(toks));
        md.insert(K_TYPES.into(), Value::Array(types));
        md.insert(
            K_MERGES.into(),
            Value::Array(vec![Value::String("a b".into())]),
        );
        md
    };
    let tok = tokenizer_from_gguf(&base()).unwrap();
    assert_eq!(
        tok.encode("ab<|end|>", false).unwrap().get_ids(),
        [256, 257]
    );
    assert_eq!(tok.decode(&[256, 257], true).unwrap(), "ab");

    type Edit = fn(&mut HashMap<String, Value>);
    let cases: &[(&str, Edit, &str)] = &[
        ("no model", |m| drop(m.remove(K_MODEL)), K_MODEL),
        (
            "model bert",
            |m| drop(m.insert(K_MODEL.into(), Value::String("bert".into()))),
            "\"bert\"",
        ),
        (
            "model not a string",
            |m| drop(m.insert(K_MODEL.into(), Value::U32(2))),
            K_MODEL,
        ),
        (
            "unknown pre",
            |m| drop(m.insert(K_PRE.into(), Value::String("mystery".into()))),
            "\"mystery\" is not supported (supported: default",
        ),
        (
            "pre not a string",
            |m| drop(m.insert(K_PRE.into(), Value::Bool(true))),
            K_PRE,
        ),
        ("no tokens", |m| drop(m.remove(K_TOKENS)), K_TOKENS),
        (
            "tokens not an array",
            |m| drop(m.insert(K_TOKENS.into(), Value::String("a".into()))),
            K_TOKENS,
        ),
        (
            "empty tokens",
            |m| drop(m.insert(K_TOKENS.into(), Value::Array(vec![]))),
            K_TOKENS,
        ),
        (
            "token not a string",
            |m| {
                if let Some(Value::Array(t)) = m.get_mut(K_TOKENS) {
                    t[5] = Value::U8(5);
                }
            },
            "tokenizer.ggml.tokens`[5]",
        ),
        (
            "duplicate token",
            |m| {
                if let Some(Value::Array(t)) = m.get_mut(K_TOKENS) {
                    t[256] = Value::String("a".into());
                }
            },
            "repeats",
        ),
        ("no merges", |m| drop(m.remove(K_MERGES)), K_MERGES),
        (
            "merge without space",
            |m| {
                drop(m.insert(
                    K_MERGES.into(),
                    Value::Array(vec![Value::String("ab".into())]),
                ))
            },
            "no space",
        ),
        (
            "merge outside vocab",
            |m| {
                drop(m.insert(
                    K_MERGES.into(),
                    Value::Array(vec![Value::String("b a".into())]),
                ))
            },
            "\"ba\" is not in",
        ),
        (
            "merge not a string",
            |m| drop(m.insert(K_MERGES.into(), Value::Array(vec![Value::F32(1.0)]))),
            "merges`[0]",
        ),
        (
            "types too short",
            |m| drop(m.insert(K_TYPES.into(), Value::Array(vec![Value::I32(1)]))),
            "token_type` has 1 entries",
        ),
        (
            "type not an integer",
            |m| {
                if let Some(Value::Array(t)) = m.get_mut(K_TYPES) {
                    t[3] = Value::String("x".into());
                }
            },
            "token_type`[3]",
        ),
        (
            "bos out of range",
            |m| drop(m.insert(K_BOS.into(), Value::U32(100_000))),
            K_BOS,
        ),
        (
            "bos negative",
            |m| drop(m.insert(K_BOS.into(), Value::I32(-1))),
            K_BOS,
        ),
        (
            "bos not an integer",
            |m| drop(m.insert(K_BOS.into(), Value::F32(1.0))),
            K_BOS,
        ),
        (
            "eos huge",
            |m| drop(m.insert(K_EOS.into(), Value::U64(u64::MAX))),
            K_EOS,
        ),
        (
            "add_bos without bos",
            |m| drop(m.insert(K_ADD_BOS.into(), Value::Bool(true))),
            K_BOS,
        ),
        (
            "add_eos not a bool",
            |m| drop(m.insert(K_ADD_EOS.into(), Value::U8(1))),
            K_ADD_EOS,
        ),
    ];
    for (what, edit, needle) in cases {
        let mut md = base();
        edit(&mut md);
        let e = err_of(&md);
        assert!(
            e.contains(needle),
            "{what}: error {e:?} should mention {needle:?}"
        );
    }
    // SPM-specific.
    let (md, _) = spm_vocab(true);
    let mut no_scores = md.clone();
    no_scores.remove(K_SCORES);
    assert!(err_of(&no_scores).contains(K_SCORES));
    let mut short_scores = md.clone();
    short_scores.insert(K_SCORES.into(), Value::Array(vec![Value::F32(0.0)]));
    assert!(err_of(&short_scores).contains(K_SCORES));
    let mut bad_score = md.clone();
    if let Some(Value::Array(s)) = bad_score.get_mut(K_SCORES) {
        s[2] = Value::String("x".into());
    }
    assert!(err_of(&bad_score).contains("scores`[2]"));
    let mut bad_prefix = md.clone();
    bad_prefix.insert(K_ADD_SPACE_PREFIX.into(), Value::String("yes".into()));
    assert!(err_of(&bad_prefix).contains(K_ADD_SPACE_PREFIX));
    let mut bad_unk = md;
    bad_unk.insert(K_UNK.into(), Value::U32(1 << 30));
    assert!(err_of(&bad_unk).contains(K_UNK));
}

/// Ids llama.cpp's own `llama-tokenize` gives for the SmolLM2 GGUF (no bos, special tokens
/// parsed), recorded once with the build from `../shared/tools/build-llama-cpp.sh`. The
/// fourth-last string differs from transformers' tokenizer.json (whitespace before a digit).
#[test]
fn smollm_ids_match_llama_cpp() {
    let Some(dir) = model_dir() else { return };
    let tok = tokenizer_from_gguf(&smollm_metadata(&dir)).unwrap();
    let cases: &[(&str, &[u32])] = &[
        ("The capital of France is", &[504, 3575, 282, 4649, 314]),
        ("Hello, world!", &[19556, 28, 905, 17]),
        ("  leading and trailing  ", &[216, 2899, 284, 35079, 256]),
        (
            "1234567890 and 3.14159",
            &[
                33, 34, 35, 36, 37, 38, 39, 40, 41, 32, 284, 216, 35, 30, 33, 36, 33, 37, 41,
            ],
        ),
        (
            "naïve café — 日本語 🙂",
            &[
                3546, 46494, 37366, 1841, 17097, 241, 115, 40993, 179, 120, 248, 47526,
            ],
        ),
        (
            "def f(x):\n\treturn x  +  1\n\n",
            &[
                1604, 275, 24, 104, 727, 198, 197, 5406, 1792, 216, 1232, 256, 33, 1116,
            ],
        ),
        (
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
            &[1, 4093, 198, 26843, 2, 198, 1, 520, 9531, 198],
        ),
        (
            "I'm can't won't they'll",
            &[57, 5248, 416, 982, 3763, 982, 502, 3060],
        ),
        ("\n\n\n   \t  ", &[13272, 197, 256]),
        ("A", &[49]),
    ];
    for (text, ids) in cases {
        let got = tok.encode(*text, false).unwrap().get_ids().to_vec();
        assert_eq!(&got, ids, "{text:?}");
    }
}

fn spm_fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spm")
}

fn gguf_metadata(path: &Path) -> HashMap<String, Value> {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    candle_core::quantized::gguf_file::Content::read(&mut f)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .metadata
}

/// Checks one fixture GGUF against llama.cpp's ids: `encode(text, true)` (llama.cpp's
/// `parse_special = false` is `encode_special_tokens`), and decoding gives the text back as
/// llama.cpp's detokenizer would. Returns the mismatches.
fn spm_fixture_failures(file: &serde_json::Value, vocab_size: usize, bos: u32) -> Vec<String> {
    let name = file["gguf"].as_str().unwrap();
    let tok = tokenizer_from_gguf(&gguf_metadata(&spm_fixture_dir().join(name)))
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    assert_eq!(tok.get_vocab_size(true), vocab_size, "{name}");
    let prefix = file["add_space_prefix"].as_bool().unwrap();
    let added = tok.get_added_tokens_decoder();
    let mut failures = Vec::new();
    for case in file["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let parse_special = case["parse_special"].as_bool().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let mut tok = tok.clone();
        tok.set_encode_special_tokens(!parse_special);
        let got = tok.encode(text, true).unwrap().get_ids().to_vec();
        if got != want {
            failures.push(format!(
                "{name} {text:?} (parse_special {parse_special}):\n  got  {got:?}\n  want {want:?}"
            ));
            continue;
        }
        assert_eq!(got.first(), Some(&bos), "{name} {text:?}");
        // Decoding (specials shown) gives the text back; a literal "▁" comes back as a space.
        // With the space prefix a text run after a special keeps its prefix space, as in llama.cpp.
        let back = tok.decode(&got[1..], false).unwrap();
        if !(prefix && got.iter().any(|id| added.contains_key(id)))
            && back != text.replace('▁', " ")
        {
            failures.push(format!("{name}: decode {text:?} gives {back:?}"));
        }
    }
    failures
}

/// The Gemma-3-like SentencePiece fixture (tests/fixtures/spm, see its README): three GGUFs
/// written by llama.cpp's converter, and llama.cpp's own `llama-tokenize` ids for hand-written
/// hostile strings and seeded random ones.
#[test]
fn gemma3_like_spm_matches_llama_tokenize() {
    let cases: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(spm_fixture_dir().join("cases.json")).unwrap(),
    )
    .unwrap();
    let vocab_size = cases["vocab_size"].as_u64().unwrap() as usize;
    let bos = cases["bos_id"].as_u64().unwrap() as u32;
    let files = cases["files"].as_array().unwrap();
    assert_eq!(files.len(), 3);
    let failures: Vec<String> = files
        .iter()
        .flat_map(|f| spm_fixture_failures(f, vocab_size, bos))
        .collect();
    assert!(
        failures.is_empty(),
        "{} cases differ from llama.cpp:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Gemma-3-sized synthetic SPM metadata: 262,144 tokens laid out like Gemma 3's GGUF (controls,
/// 6,000 `<unusedN>` controls, user-defined whitespace runs, 256 byte tokens, then BPE-like pieces,
/// each the concatenation of two earlier ones, with strictly decreasing scores).
fn gemma3_sized_metadata() -> HashMap<String, Value> {
    const N: usize = 262_144;
    let mut toks: Vec<String> = [
        "<pad>",
        "<eos>",
        "<bos>",
        "<unk>",
        "<start_of_turn>",
        "<end_of_turn>",
    ]
    .map(String::from)
    .to_vec();
    let mut types = vec![3, 3, 3, 2, 3, 3];
    for i in 0..6000 {
        toks.push(format!("<unused{i}>"));
        types.push(3);
    }
    for n in 2..32 {
        toks.push(" ".repeat(n));
        types.push(4);
    }
    for s in ["\n", "\n\n", "\t"] {
        toks.push(s.into());
        types.push(4);
    }
    for b in 0..=255u8 {
        toks.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    let first_piece = toks.len();
    let mut seen: std::collections::HashSet<String> = toks.iter().cloned().collect();
    // Single characters: ASCII, Latin-1, some CJK (a big alphabet, as Gemma's).
    let chars = (b'!'..=b'~')
        .map(char::from)
        .chain("▁".chars())
        .chain((0xC0..0x180).filter_map(char::from_u32))
        .chain((0x4E00..0x4E00 + 8000).filter_map(char::from_u32));
    for c in chars {
        if seen.insert(c.to_string()) {
            toks.push(c.to_string());
            types.push(1);
        }
    }
    let mut seed = 7u64;
    let mut rand = |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize % n
    };
    let n_chars = toks.len() - first_piece;
    while toks.len() < N {
        // An earlier piece extended by a character or short piece, like a BPE merge.
        let a = first_piece + rand(toks.len() - first_piece);
        let b = first_piece + rand(n_chars + (toks.len() - first_piece - n_chars).min(2_000));
        let t = format!("{}{}", toks[a], toks[b]);
        if seen.insert(t.clone()) {
            toks.push(t);
            types.push(1);
        }
    }
    let scores: Vec<Value> = (0..N)
        .map(|i| {
            Value::F32(if i < first_piece {
                0.0
            } else {
                -((i - first_piece) as f32)
            })
        })
        .collect();
    HashMap::from([
        (K_MODEL.to_string(), Value::String("llama".into())),
        (K_PRE.to_string(), Value::String("default".into())),
        (
            K_TOKENS.to_string(),
            Value::Array(toks.into_iter().map(Value::String).collect()),
        ),
        (K_SCORES.to_string(), Value::Array(scores)),
        (
            K_TYPES.to_string(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        (K_BOS.to_string(), Value::U32(2)),
        (K_EOS.to_string(), Value::U32(1)),
        (K_UNK.to_string(), Value::U32(3)),
        (K_ADD_BOS.to_string(), Value::Bool(true)),
        (K_ADD_SPACE_PREFIX.to_string(), Value::Bool(false)),
    ])
}

/// A Gemma-3-sized vocabulary builds (about a second in a debug build; printed, not asserted:
/// timings belong in benchmarks) and encodes like llama.cpp: controls and whitespace runs
/// whole, the rest merged or byte-fallen-back.
#[test]
fn gemma3_sized_vocab_builds_and_encodes() {
    let md = gemma3_sized_metadata();
    let t0 = std::time::Instant::now();
    let tok = tokenizer_from_gguf(&md).expect("build");
    let built = t0.elapsed();
    assert_eq!(tok.get_vocab_size(true), 262_144);
    let text = "<start_of_turn>user\n  Hello   wörld 🦀 中文<end_of_turn>\n";
    let t1 = std::time::Instant::now();
    let ids = tok.encode(text, true).unwrap().get_ids().to_vec();
    let encoded = t1.elapsed();
    eprintln!("262,144 tokens: built in {built:?}, encoded in {encoded:?}");
    let id = |t: &str| tok.token_to_id(t).unwrap();
    assert!(
        ids.starts_with(&[2, 4]) && ids.ends_with(&[5, id("\n")]),
        "{ids:?}"
    );
    assert!(
        ids.contains(&id("  ")) && ids.contains(&id("   ")),
        "{ids:?}"
    );
    // Generation stops at the end of a turn, as in llama.cpp, though only `<eos>` is eos here.
    let ends = end_of_generation_ids(&tok);
    assert!(
        ends.contains(&id("<end_of_turn>")) && ends.contains(&id("<eos>")),
        "{ends:?}"
    );
    // 🦀 is not in the vocabulary: its four bytes.
    let crab: Vec<u32> = "🦀".bytes().map(|b| id(&format!("<0x{b:02X}>"))).collect();
    assert!(ids.windows(4).any(|w| w == crab), "{ids:?}");
    assert_eq!(
        tok.decode(&ids, true).unwrap(),
        "user\n  Hello   wörld 🦀 中文\n"
    );
}

/// Types llama.cpp's loader changes by token text: end-of-generation markers become control,
/// FIM markers too unless their id key is set.
#[test]
fn token_types_follow_llama_cpp_retyping() {
    let extra = [
        ("<end_of_turn>", 1), // → control (EOG)
        ("<eos>", 4),         // → control (EOG)
        ("<fim_prefix>", 1),  // stays normal: fim_pre_token_id is set below
        ("<fim_suffix>", 4),  // → control
        ("<mine>", 4),        // untouched
    ];
    let mut md = byte_vocab("gpt2");
    if let Some(Value::Array(t)) = md.get_mut(K_TOKENS) {
        t.extend(extra.iter().map(|e| Value::String(e.0.into())));
    }
    let types = (0..256).map(|_| 1).chain(extra.iter().map(|e| e.1));
    md.insert(
        K_TYPES.into(),
        Value::Array(types.map(Value::I32).collect()),
    );
    md.insert("tokenizer.ggml.fim_pre_token_id".into(), Value::U32(258));
    let mut tok = tokenizer_from_gguf(&md).unwrap();
    let added = tok.get_added_tokens_decoder();
    let special = |t: &str| added.values().find(|a| a.content == t).map(|a| a.special);
    assert_eq!(special("<end_of_turn>"), Some(true));
    assert_eq!(special("<eos>"), Some(true));
    assert_eq!(special("<fim_prefix>"), None);
    assert_eq!(special("<fim_suffix>"), Some(true));
    assert_eq!(special("<mine>"), Some(false));
    let text = "<end_of_turn><mine>";
    assert_eq!(tok.encode(text, false).unwrap().get_ids(), [256, 260]);
    // parse_special = false: control tokens are text, user-defined ones still match.
    tok.set_encode_special_tokens(true);
    let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
    assert_eq!(ids.len(), "<end_of_turn>".len() + 1, "{ids:?}");
    assert_eq!(ids.last(), Some(&260));
}

/// Metadata llama.cpp accepts: arrays longer than the token list, integer scores, empty
/// tokens (renamed `[EMPTY_i]`).
#[test]
fn spm_metadata_llama_cpp_accepts() {
    let (md, _) = spm_vocab(false);
    let want = tokenizer_from_gguf(&md)
        .unwrap()
        .encode("abcd ab", false)
        .unwrap();
    let mut md2 = md.clone();
    for key in [K_SCORES, K_TYPES] {
        if let Some(Value::Array(a)) = md2.get_mut(key) {
            let last = a.last().unwrap().clone();
            a.push(last);
        }
    }
    if let Some(Value::Array(a)) = md2.get_mut(K_SCORES) {
        // Integer scores in the same order (all are whole numbers here).
        for v in a.iter_mut() {
            if let Value::F32(f) = *v {
                *v = Value::I32(f as i32);
            }
        }
    }
    if let Some(Value::Array(t)) = md2.get_mut(K_TOKENS) {
        t[3] = Value::String(String::new()); // was <ctl>
    }
    let tok = tokenizer_from_gguf(&md2).unwrap();
    assert_eq!(
        tok.encode("abcd ab", false).unwrap().get_ids(),
        want.get_ids()
    );
    assert_eq!(tok.token_to_id("[EMPTY_3]"), Some(3));
}

/// Tied scores: llama.cpp takes the leftmost pair, so a run of a character grows from the left
/// (Gemma GGUFs whose whitespace runs are normal tokens all scoring 0).
#[test]
fn spm_tied_runs_grow_from_the_left() {
    let mut v: Vec<(String, f32, i32)> = vec![("<unk>".into(), 0.0, 2), ("<s>".into(), 0.0, 3)];
    v.extend((0..=255u32).map(|b| (format!("<0x{b:02X}>"), 0.0, 6)));
    v.extend((1..=5).map(|n| ("▁".repeat(n), 0.0, 1)));
    v.extend((1..=3).map(|n| ("\n".repeat(n), 0.0, 1)));
    let md = HashMap::from([
        (K_MODEL.to_string(), Value::String("llama".into())),
        (
            K_TOKENS.to_string(),
            Value::Array(v.iter().map(|t| Value::String(t.0.clone())).collect()),
        ),
        (
            K_SCORES.to_string(),
            Value::Array(v.iter().map(|t| Value::F32(t.1)).collect()),
        ),
        (
            K_TYPES.to_string(),
            Value::Array(v.iter().map(|t| Value::I32(t.2)).collect()),
        ),
        (K_ADD_SPACE_PREFIX.to_string(), Value::Bool(false)),
    ]);
    let tok = tokenizer_from_gguf(&md).unwrap();
    let pieces = |s: &str| tok.encode(s, false).unwrap().get_tokens().to_vec();
    assert_eq!(pieces("\n\n\n\n"), ["\n\n\n", "\n"]);
    assert_eq!(pieces(&" ".repeat(12)), ["▁▁▁▁▁", "▁▁▁▁▁", "▁▁"]);
}
