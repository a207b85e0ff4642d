//! CLIP's text cleaning, step for step as OpenAI's tokenizer does it before its regex:
//!
//! 1. `ftfy.fix_text` (the subset below),
//! 2. `html.unescape` twice,
//! 3. strip, collapse each whitespace run to one space, strip,
//! 4. lowercase.
//!
//! ftfy has no Rust port. Of its default fixes we reproduce, in ftfy's order and repeated
//! until nothing changes as ftfy does: `unescape_html` (only for text without `<`),
//! `fix_c1_controls`, `fix_latin_ligatures`, `fix_character_width`, `uncurl_quotes`,
//! `remove_terminal_escapes`, `remove_control_chars` and NFC. `fix_line_breaks` needs no
//! code: every break it rewrites is whitespace that step 3 turns into one space anyway.
//! Not reproduced: the mojibake repair (`fix_encoding`, `decode_inconsistent_utf8` and
//! their byte-level helpers), a statistical guess about text decoded with the wrong
//! codec ("cafÃ©" -> "café"). Prompts containing mojibake therefore tokenize as typed;
//! the golden test counts them (class "fix_encoding").

use std::sync::LazyLock;

use regex::Regex;
use tokenizers::NormalizedString;

use super::html;

/// ftfy stops after this many rounds at the latest; in practice two or three suffice.
const MAX_FIX_ROUNDS: usize = 16;

/// `\x1b[...m`-style terminal escapes (ftfy's `ANSI_RE`).
static ANSI_ESCAPE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\x1b\[(?:\d|;)*[a-zA-Z]").expect("valid regex"));

/// The whole cleaning: what CLIP's tokenizer feeds to its regex.
pub fn clean(text: &str) -> String {
    let fixed = fix_text(text);
    let once = html::unescape(&fixed);
    let twice = html::unescape(&once);
    collapse_whitespace(twice.trim_matches(is_python_space)).to_lowercase()
}

/// ftfy works on segments that end after each `\n`; its automatic html unescape is
/// switched off from the first segment containing `<` to the end of the text.
fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut unescape_html = true;
    for segment in text.split_inclusive('\n') {
        unescape_html &= !segment.contains('<');
        out.push_str(&fix_segment(segment, unescape_html));
    }
    out
}

fn fix_segment(segment: &str, unescape_html: bool) -> String {
    let mut text = segment.to_string();
    for _ in 0..MAX_FIX_ROUNDS {
        let mut next = if unescape_html {
            html::unescape_strict(&text).into_owned()
        } else {
            text.clone()
        };
        next = next.chars().flat_map(fix_char).collect();
        next = ANSI_ESCAPE.replace_all(&next, "").into_owned();
        next = next.chars().filter(|&c| !is_unwanted_control(c)).collect();
        next = nfc(&next);
        if next == text {
            break;
        }
        text = next;
    }
    text
}

/// The per-character fixes: C1 controls, Latin ligatures, width forms, curly quotes.
fn fix_char(c: char) -> CharFix {
    match c {
        // fix_c1_controls: a C1 control is a Windows-1252 byte decoded as Latin-1.
        '\u{80}'..='\u{9F}' => CharFix::One(html::WINDOWS_1252_C1[c as usize - 0x80]),
        // fix_latin_ligatures
        'Ĳ' => CharFix::Str("IJ"),
        'ĳ' => CharFix::Str("ij"),
        'ŉ' => CharFix::Str("ʼn"),
        'Ǳ' => CharFix::Str("DZ"),
        'ǲ' => CharFix::Str("Dz"),
        'ǳ' => CharFix::Str("dz"),
        'Ǆ' => CharFix::Str("DŽ"),
        'ǅ' => CharFix::Str("Dž"),
        'ǆ' => CharFix::Str("dž"),
        'Ǉ' => CharFix::Str("LJ"),
        'ǈ' => CharFix::Str("Lj"),
        'ǉ' => CharFix::Str("lj"),
        'Ǌ' => CharFix::Str("NJ"),
        'ǋ' => CharFix::Str("Nj"),
        'ǌ' => CharFix::Str("nj"),
        'ﬀ' => CharFix::Str("ff"),
        'ﬁ' => CharFix::Str("fi"),
        'ﬂ' => CharFix::Str("fl"),
        'ﬃ' => CharFix::Str("ffi"),
        'ﬄ' => CharFix::Str("ffl"),
        'ﬅ' => CharFix::Str("ſt"),
        'ﬆ' => CharFix::Str("st"),
        // fix_character_width: ideographic space and the halfwidth/fullwidth forms block.
        '\u{3000}' => CharFix::One(' '),
        '\u{FF01}'..='\u{FFEF}' => CharFix::Owned(nfkc(&c.to_string())),
        // uncurl_quotes
        '\u{2BC}' | '\u{2018}'..='\u{201B}' => CharFix::One('\''),
        '\u{201C}'..='\u{201F}' => CharFix::One('"'),
        _ => CharFix::One(c),
    }
}

/// What one character becomes; iterated by `flat_map`.
enum CharFix {
    One(char),
    Str(&'static str),
    Owned(String),
}

impl IntoIterator for CharFix {
    type Item = char;
    type IntoIter = std::vec::IntoIter<char>;
    fn into_iter(self) -> Self::IntoIter {
        match self {
            CharFix::One(c) => vec![c],
            CharFix::Str(s) => s.chars().collect(),
            CharFix::Owned(s) => s.chars().collect(),
        }
        .into_iter()
    }
}

/// ftfy's `remove_control_chars`: C0 controls other than tab / newlines / form feed,
/// DEL, deprecated Arabic format characters, the BOM and interlinear annotation marks.
fn is_unwanted_control(c: char) -> bool {
    matches!(c,
        '\u{00}'..='\u{08}' | '\u{0B}' | '\u{0E}'..='\u{1F}' | '\u{7F}' | '\u{206A}'..='\u{206F}'
        | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFC}')
}

/// Python's `str.isspace` (what `str.strip()` removes): Unicode White_Space plus the
/// information separators U+1C..U+1F.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1C}'..='\u{1F}').contains(&c)
}

/// `re.sub(r"\s+", " ", text).strip()`: `\s` is Unicode White_Space (Rust's
/// `char::is_whitespace`, the same set as the `regex` module's), `strip` is Python's.
fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out.trim_matches(is_python_space).to_string()
}

fn nfc(text: &str) -> String {
    if text.is_ascii() {
        return text.to_string();
    }
    let mut n = NormalizedString::from(text);
    n.nfc();
    n.get().to_string()
}

fn nfkc(text: &str) -> String {
    let mut n = NormalizedString::from(text);
    n.nfkc();
    n.get().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values: openai-clip's `whitespace_clean(basic_clean(t)).lower()` with ftfy 6.3.
    #[test]
    fn matches_clip_cleaning() {
        let cases = [
            ("  A Photo\tof\n a CAT  ", "a photo of a cat"),
            ("don\u{2019}t \u{201C}x\u{201D}", "don't \"x\""),
            ("\u{FB01}ne \u{FF54}\u{FF45}\u{FF53}\u{FF54}\u{3000}x", "fine test x"),
            ("P&EACUTE;REZ &amp;amp;amp;", "pérez &"),
            ("<b>&amp;amp;amp;</b>", "<b>&amp;</b>"),
            ("\x1b[31mred\x1b[0m", "red"),
            ("a\u{0}b\u{7F}c\u{FEFF}", "abc"),
            ("cafe\u{301}", "café"),
            ("\u{93}hi\u{94}", "\"hi\""),
            ("ΟΔΟΣ", "οδος"),
            ("\u{1C}x\u{1C}", "x"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(clean(input), want, "clean({input:?})");
        }
    }
}
