//! The CLIP BPE tokenizer (SD 1.x text encoder vocabulary), through the `tokenizers` crate.
//!
//! Pipeline: [`clean`](super::clean::clean) (ftfy subset, html unescape, whitespace,
//! lowercase), then CLIP's regex splits the text into words (contractions, letter runs,
//! single digits, runs of other non-space characters), each word's UTF-8 bytes map to
//! the 256 byte symbols, and BPE merges them with `</w>` marking the word's end.
//!
//! Control tokens: CLIP's own regex also matches the literal text `<|startoftext|>` and
//! `<|endoftext|>` and turns it into ids 49406 / 49407 (transformers does the same with
//! its added tokens). A prompt is text typed by a user, so here those strings are plain
//! characters (`<|`, `endoftext`, `|>`): no prompt can end the sequence early or start
//! a second one. BOS and EOS are placed only by the chunker.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{Model, SplitDelimiterBehavior, Tokenizer};

use super::{clean, BOS, EOS};
use crate::{Error, Result};

/// The vocabulary shipped in the binary: derived from OpenAI's `bpe_simple_vocab_16e6`
/// by `tools/make_clip_vocab.py` (see `assets/clip/README.md`).
const EMBEDDED_VOCAB: &str = include_str!("../../assets/clip/vocab.json");
const EMBEDDED_MERGES: &str = include_str!("../../assets/clip/merges.txt");

/// CLIP's word regex without the two control-token alternatives (see the module docs).
/// CLIP compiles it case-insensitively; on lowercased text that matters in two places,
/// spelled out here instead of a global `(?i)`: `'ſ` (long s) is the contraction `'s`,
/// and U+0345 (combining ypogegrammeni, whose case folding is a letter) matches no
/// alternative at all, so it is dropped.
const WORD_PATTERN: &str = r"'[sſ]|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}\x{345}]+";

/// The fast tokenizer's file name.
const TOKENIZER_JSON: &str = "tokenizer.json";

/// CLIP's tokenizer.json is about 2-4 MB; anything far larger is not one.
const MAX_TOKENIZER_JSON: u64 = 64 << 20;

/// The part of a `tokenizer.json` this reader uses: its BPE model. Its normalizer and
/// pre-tokenizer are not read: CLIP's are fixed, and ours reproduce OpenAI's.
#[derive(serde::Deserialize)]
struct TokenizerJson {
    model: BpeJson,
}

#[derive(serde::Deserialize)]
struct BpeJson {
    #[serde(rename = "type")]
    kind: Option<String>,
    vocab: HashMap<String, u32>,
    merges: Vec<MergeJson>,
    end_of_word_suffix: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum MergeJson {
    Line(String),
    Pair(String, String),
}

/// The SD 1.x text encoder's vocabulary size: 256 bytes, 256 bytes + `</w>`, 48894 merges,
/// BOS and EOS.
pub const VOCAB_SIZE: usize = 49408;

/// The CLIP tokenizer: ids for text, no BOS/EOS, no truncation.
#[derive(Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    /// id -> vocabulary string (byte symbols), for display.
    tokens: Vec<String>,
    /// The id of `,</w>`, where the chunker prefers to break long prompts.
    comma: u32,
}

impl ClipTokenizer {
    /// The tokenizer built into the binary (no files needed).
    pub fn embedded() -> Self {
        let origin = Path::new("<embedded assets/clip>");
        Self::from_parts(EMBEDDED_VOCAB, origin, EMBEDDED_MERGES, origin)
            .expect("the embedded CLIP vocabulary is valid (checked by tests)")
    }

    /// A diffusers `tokenizer/` folder: `vocab.json` + `merges.txt` (transformers 4's
    /// slow-tokenizer files), else `tokenizer.json` (the fast tokenizer's file, all that
    /// transformers 5 writes). Either way the vocabulary and merges are checked and
    /// run through the same cleaning, regex and BPE as the built-in tokenizer.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let vocab_path = dir.join("vocab.json");
        let json_path = dir.join(TOKENIZER_JSON);
        if !vocab_path.is_file() && json_path.is_file() {
            return Self::from_tokenizer_json(&json_path);
        }
        let merges_path = dir.join("merges.txt");
        let vocab = read(&vocab_path)?;
        let merges = read(&merges_path)?;
        Self::from_parts(&vocab, &vocab_path, &merges, &merges_path)
    }

    /// As [`ClipTokenizer::from_dir`], except that a folder with no tokenizer file at
    /// all gives the built-in tokenizer, with a note saying so for the user.
    pub fn for_folder(dir: &Path) -> Result<(Self, Option<String>)> {
        let has_files = ["vocab.json", "merges.txt", TOKENIZER_JSON]
            .iter()
            .any(|f| dir.join(f).is_file());
        if has_files {
            return Ok((Self::from_dir(dir)?, None));
        }
        let note = format!(
            "{} has no vocab.json, merges.txt or {TOKENIZER_JSON}: using the built-in CLIP tokenizer",
            dir.display()
        );
        Ok((Self::embedded(), Some(note)))
    }

    /// A `tokenizer.json` whose model is CLIP's BPE.
    pub fn from_tokenizer_json(path: &Path) -> Result<Self> {
        let bad = |msg: String| Error::bad_file(path, msg);
        let len = std::fs::metadata(path)
            .map_err(|e| Error::io(path.display().to_string(), e))?
            .len();
        if len > MAX_TOKENIZER_JSON {
            return Err(bad(format!(
                "{len} bytes, more than any CLIP tokenizer.json (about 2-4 MB; limit {MAX_TOKENIZER_JSON})"
            )));
        }
        let file: TokenizerJson = serde_json::from_str(&read(path)?)
            .map_err(|e| bad(format!("not a tokenizer.json with a BPE model: {e}")))?;
        let model = file.model;
        if let Some(kind) = model.kind.as_deref().filter(|&k| k != "BPE") {
            return Err(bad(format!("model.type is {kind:?}, expected CLIP's \"BPE\"")));
        }
        if let Some(suffix) = model.end_of_word_suffix.as_deref().filter(|&s| s != "</w>") {
            return Err(bad(format!(
                "model.end_of_word_suffix is {suffix:?}, expected CLIP's \"</w>\""
            )));
        }
        check_vocab(&model.vocab, path)?;
        // Older files write each merge as "left right", newer ones as ["left", "right"];
        // both become merges.txt lines (no CLIP token contains a space).
        let lines: Vec<String> = model
            .merges
            .into_iter()
            .map(|m| match m {
                MergeJson::Line(line) => line,
                MergeJson::Pair(left, right) => format!("{left} {right}"),
            })
            .collect();
        let merges = parse_merges(&lines.join("\n"), &model.vocab)
            .map_err(|msg| bad(format!("model.merges: {}", msg.replacen("line", "merge", 1))))?;
        Self::from_vocab(model.vocab, merges, path)
    }

    fn from_parts(
        vocab_json: &str,
        vocab_origin: &Path,
        merges_txt: &str,
        merges_origin: &Path,
    ) -> Result<Self> {
        let vocab: HashMap<String, u32> = serde_json::from_str(vocab_json)
            .map_err(|e| Error::bad_file(vocab_origin, format!("not a JSON object of token -> id: {e}")))?;
        check_vocab(&vocab, vocab_origin)?;
        let merges = parse_merges(merges_txt, &vocab).map_err(|msg| Error::bad_file(merges_origin, msg))?;
        Self::from_vocab(vocab, merges, merges_origin)
    }

    /// The tokenizer of a checked vocabulary and its merges.
    fn from_vocab(vocab: HashMap<String, u32>, merges: Vec<(String, String)>, origin: &Path) -> Result<Self> {
        let mut tokens = vec![String::new(); vocab.len()];
        for (token, &id) in &vocab {
            tokens[id as usize] = token.clone();
        }
        let comma = vocab[",</w>"];
        let bpe = BPE::builder()
            .vocab_and_merges(vocab.into_iter().collect::<Vocab>(), merges)
            .end_of_word_suffix("</w>".into())
            .unk_token("<|endoftext|>".into())
            .build()
            .map_err(|e| Error::bad_file(origin, e.to_string()))?;
        let split = Split::new(
            SplitPattern::Regex(WORD_PATTERN.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .expect("CLIP word regex compiles");
        // The words are already split: the byte-level step only maps bytes to symbols.
        let bytes = ByteLevel::new(false, false, false);
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(Sequence::new(vec![split.into(), bytes.into()])));
        Ok(Self { inner, tokens, comma })
    }

    /// Token ids of `text` after CLIP's cleaning: no BOS/EOS, never truncated.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let cleaned = clean::clean(text);
        if cleaned.is_empty() {
            return Vec::new();
        }
        // Cannot fail: every byte symbol (with and without `</w>`) is in the vocabulary,
        // which `check_vocab` verified, and the regex has no backtracking construct.
        self.inner
            .encode(cleaned.as_str(), false)
            .expect("CLIP BPE covers every byte")
            .get_ids()
            .to_vec()
    }

    /// The id of `,</w>`.
    pub fn comma_id(&self) -> u32 {
        self.comma
    }

    /// The vocabulary string of `id` (byte symbols, `</w>` suffix), if it exists.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of a vocabulary string such as `cat</w>`.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.get_model().token_to_id(token)
    }

    /// A readable form of `id`: the text its bytes spell (non-UTF-8 fragments as `\xNN`),
    /// with `</w>` kept to show word ends.
    pub fn display(&self, id: u32) -> String {
        let Some(token) = self.token(id) else {
            return format!("<unknown id {id}>");
        };
        if id == BOS || id == EOS {
            return token.to_string();
        }
        let (body, end) = match token.strip_suffix("</w>") {
            Some(body) => (body, "</w>"),
            None => (token, ""),
        };
        let bytes: Vec<u8> = body.chars().filter_map(byte_of_symbol).collect();
        let text = match std::str::from_utf8(&bytes) {
            Ok(s) => s.to_string(),
            Err(_) => bytes.iter().map(|b| format!("\\x{b:02X}")).collect(),
        };
        format!("{text}{end}")
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path.display().to_string(), e))
}

/// The SD 1.x vocabulary: exactly [`VOCAB_SIZE`] ids 0..49407, the 512 byte symbols (so
/// that any text encodes), BOS/EOS at their fixed ids, and the comma the chunker needs.
fn check_vocab(vocab: &HashMap<String, u32>, origin: &Path) -> Result<()> {
    let bad = |msg: String| Err(Error::bad_file(PathBuf::from(origin), msg));
    if vocab.len() != VOCAB_SIZE {
        return bad(format!(
            "expected the SD 1.x CLIP vocabulary of {VOCAB_SIZE} tokens, found {}",
            vocab.len()
        ));
    }
    let mut seen = vec![false; VOCAB_SIZE];
    for (token, &id) in vocab {
        match seen.get_mut(id as usize) {
            Some(slot) if !*slot => *slot = true,
            Some(_) => return bad(format!("id {id} is used twice (again by {token:?})")),
            None => return bad(format!("id {id} of {token:?} is outside 0..{VOCAB_SIZE}")),
        }
    }
    for (token, id) in [("<|startoftext|>", BOS), ("<|endoftext|>", EOS)] {
        if vocab.get(token) != Some(&id) {
            return bad(format!("expected {token} = {id}, found {:?}", vocab.get(token)));
        }
    }
    for b in 0..=255u8 {
        let symbol = symbol_of_byte(b).to_string();
        for token in [symbol.clone(), format!("{symbol}</w>")] {
            if !vocab.contains_key(&token) {
                return bad(format!("byte symbol {token:?} (byte 0x{b:02X}) is missing"));
            }
        }
    }
    if !vocab.contains_key(",</w>") {
        return bad("token \",</w>\" is missing".into());
    }
    Ok(())
}

/// The merges of CLIP's vocabulary: the BPE file's first 48894 (49408 minus byte symbols
/// and control tokens). CLIP and transformers' original tokenizer read no further.
const CLIP_MERGES: usize = VOCAB_SIZE - 512 - 2;

/// `merges.txt`: an optional `#version` header, then one `left right` pair per line.
fn parse_merges(text: &str, vocab: &HashMap<String, u32>) -> Result<Vec<(String, String)>, String> {
    let mut merges = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if (n == 0 && line.starts_with("#version")) || line.trim().is_empty() {
            continue;
        }
        if merges.len() == CLIP_MERGES {
            break;
        }
        let mut parts = line.split(' ');
        let (Some(left), Some(right), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("line {}: expected two tokens, found {line:?}", n + 1));
        };
        if !vocab.contains_key(&format!("{left}{right}")) {
            return Err(format!(
                "line {}: merge result {:?} is not in the vocabulary",
                n + 1,
                format!("{left}{right}")
            ));
        }
        merges.push((left.to_string(), right.to_string()));
    }
    Ok(merges)
}

/// CLIP's (GPT-2's) byte-to-symbol table: printable Latin-1 bytes stand for themselves,
/// the other 68 bytes take the code points 256.. in byte order.
fn symbol_of_byte(b: u8) -> char {
    if is_printable_byte(b) {
        return b as char;
    }
    let rank = (0..b).filter(|&x| !is_printable_byte(x)).count() as u32;
    char::from_u32(256 + rank).expect("below 512")
}

fn byte_of_symbol(c: char) -> Option<u8> {
    let code = c as u32;
    if code < 256 {
        return is_printable_byte(code as u8).then_some(code as u8);
    }
    (0..=255u8)
        .filter(|&b| !is_printable_byte(b))
        .nth((code - 256) as usize)
}

fn is_printable_byte(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_vocabulary_is_clip_l() {
        let tok = ClipTokenizer::embedded();
        assert_eq!(tok.token(BOS), Some("<|startoftext|>"));
        assert_eq!(tok.token(EOS), Some("<|endoftext|>"));
        assert_eq!(tok.token_id("!"), Some(0));
        assert_eq!(tok.token_id("!</w>"), Some(256));
        assert_eq!(tok.comma_id(), 267);
        // The ids every CLIP user has seen (OpenAI CLIP README / HF model card).
        assert_eq!(tok.encode("a photo of a cat"), [320, 1125, 539, 320, 2368]);
    }

    #[test]
    fn control_token_text_is_literal() {
        let tok = ClipTokenizer::embedded();
        let ids = tok.encode("a <|endoftext|> b <|startoftext|>");
        assert!(!ids.contains(&BOS) && !ids.contains(&EOS), "{ids:?}");
        // CLIP's words `<|`, `endoftext`, `|>`, each ending in `</w>`.
        let shown: String = ids.iter().map(|&id| tok.display(id)).collect();
        assert_eq!(
            shown.replace("</w>", " "),
            "a <| endoftext |> b <| startoftext |> "
        );
    }

    #[test]
    fn byte_table_round_trips() {
        for b in 0..=255u8 {
            assert_eq!(byte_of_symbol(symbol_of_byte(b)), Some(b));
        }
        assert_eq!(symbol_of_byte(0), 'Ā');
        assert_eq!(symbol_of_byte(b' '), 'Ġ');
    }

    #[test]
    fn display_decodes_bytes() {
        let tok = ClipTokenizer::embedded();
        let ids = tok.encode("café 東");
        let shown: String = ids.iter().map(|&id| tok.display(id)).collect();
        assert!(shown.contains("caf") && shown.contains("</w>"), "{shown}");
    }

    #[test]
    fn bad_tokenizer_dir_is_refused() {
        let dir = std::env::temp_dir().join(format!("sd-wgpu-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vocab.json"), r#"{"a": 0}"#).unwrap();
        std::fs::write(dir.join("merges.txt"), "#version: 0.2\n").unwrap();
        let err = ClipTokenizer::from_dir(&dir)
            .err()
            .expect("must fail")
            .to_string();
        assert!(err.contains("vocab.json") && err.contains("49408"), "{err}");
        std::fs::write(dir.join("vocab.json"), EMBEDDED_VOCAB).unwrap();
        std::fs::write(dir.join("merges.txt"), "#version: 0.2\ni n\nzzq qq\n").unwrap();
        let err = ClipTokenizer::from_dir(&dir)
            .err()
            .expect("must fail")
            .to_string();
        assert!(err.contains("merges.txt") && err.contains("line 3"), "{err}");
        std::fs::write(dir.join("merges.txt"), EMBEDDED_MERGES).unwrap();
        let tok = ClipTokenizer::from_dir(&dir).expect("a copy of the embedded files loads");
        assert_eq!(tok.encode("a photo of a cat"), [320, 1125, 539, 320, 2368]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn folder_files_are_preferred() {
        let dir = std::env::temp_dir().join(format!("sd-wgpu-tokdir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (_, note) = ClipTokenizer::for_folder(&dir).expect("no files: built-in");
        let note = note.expect("the fallback is said");
        assert!(
            note.contains("built-in") && note.contains("tokenizer.json"),
            "{note}"
        );
        std::fs::write(dir.join("vocab.json"), "[]").unwrap();
        std::fs::write(dir.join("merges.txt"), "#version: 0.2\n").unwrap();
        let err = ClipTokenizer::for_folder(&dir)
            .err()
            .expect("the folder's own files are read");
        assert!(err.to_string().contains("vocab.json"), "{err}");
        std::fs::remove_file(dir.join("vocab.json")).unwrap();
        let err = ClipTokenizer::for_folder(&dir)
            .err()
            .expect("merges.txt alone is incomplete");
        assert!(err.to_string().contains("vocab.json"), "{err}");
        std::fs::remove_file(dir.join("merges.txt")).unwrap();
        std::fs::write(
            dir.join("tokenizer.json"),
            r#"{"model": {"type": "WordPiece", "vocab": {}, "merges": []}}"#,
        )
        .unwrap();
        let err = ClipTokenizer::for_folder(&dir).err().expect("not CLIP's BPE");
        assert!(
            err.to_string().contains("tokenizer.json") && err.to_string().contains("WordPiece"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tokenizer_json_with_string_merges_reads_like_the_embedded_files() {
        // Older tokenizer.json files write merges as "left right" strings.
        let vocab: serde_json::Value = serde_json::from_str(EMBEDDED_VOCAB).unwrap();
        let merges: Vec<&str> = EMBEDDED_MERGES.lines().skip(1).collect();
        let json = serde_json::json!({
            "model": {"type": "BPE", "vocab": vocab, "merges": merges, "end_of_word_suffix": "</w>"}
        });
        let dir = std::env::temp_dir().join(format!("sd-wgpu-tokjson-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tokenizer.json"), json.to_string()).unwrap();
        let tok = ClipTokenizer::from_dir(&dir).unwrap();
        let embedded = ClipTokenizer::embedded();
        for text in ["a photo of a cat", "café 東, <hazard>!", "((masterpiece)) 8k uhd"] {
            assert_eq!(tok.encode(text), embedded.encode(text), "{text}");
        }
        let mut bad = json.clone();
        bad["model"]["merges"][2] = "zzq qq".into();
        std::fs::write(dir.join("tokenizer.json"), bad.to_string()).unwrap();
        let err = ClipTokenizer::from_dir(&dir)
            .err()
            .expect("bad merge")
            .to_string();
        assert!(err.contains("tokenizer.json") && err.contains("merge 3"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
