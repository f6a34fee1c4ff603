//! Tests of the GGUF tokenizer converter's byte-level BPE side: the real SmolLM2 GGUF against
//! transformers' tokenizer.json, llama.cpp's and the reference ids, pre-tokenizer splits, and
//! hostile metadata. The SentencePiece side is in `tokenizer_spm_tests.rs`.
use super::spm_tests::spm_vocab;
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
pub(super) fn byte_vocab(pre: &str) -> HashMap<String, Value> {
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
