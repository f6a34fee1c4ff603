//! Tests of the GGUF tokenizer converter's SentencePiece side: against a direct implementation
//! of llama.cpp's SPM algorithm, against `llama-tokenize` on Gemma-3-like fixtures, a
//! Gemma-3-sized vocabulary, and llama.cpp's token retyping and lenient metadata.
use super::tests::byte_vocab;
use super::*;
use std::path::{Path, PathBuf};

/// A small SentencePiece vocabulary: specials, byte tokens, chars and merged pieces with
/// distinct scores.
pub(super) fn spm_vocab(
    add_space_prefix: bool,
) -> (HashMap<String, Value>, Vec<(String, f32, i32)>) {
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
