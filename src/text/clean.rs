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
        next = map_chars(&next, fix_c1_control);
        next = map_chars(&next, fix_latin_ligature);
        next = map_chars(&next, fix_character_width);
        next = map_chars(&next, uncurl_quote);
        next = ANSI_ESCAPE.replace_all(&next, "").into_owned();
        next.retain(|c| !is_unwanted_control(c));
        next = nfc(&next);
        if next == text {
            break;
        }
        text = next;
    }
    text
}

/// Applies a per-character fix to every character of `text`.
fn map_chars(text: &str, fix: fn(char, &mut String)) -> String {
    let mut out = String::with_capacity(text.len());
    text.chars().for_each(|c| fix(c, &mut out));
    out
}

/// `fix_c1_controls`: a C1 control character is a Windows-1252 byte decoded as Latin-1.
fn fix_c1_control(c: char, out: &mut String) {
    match c {
        '\u{80}'..='\u{9F}' => out.push(html::WINDOWS_1252_C1[c as usize - 0x80]),
        _ => out.push(c),
    }
}

/// `fix_latin_ligatures`: typographic ligatures and legacy digraph characters.
fn fix_latin_ligature(c: char, out: &mut String) {
    let letters = match c {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "ʼn",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "DŽ",
        'ǅ' => "Dž",
        'ǆ' => "dž",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "ſt",
        'ﬆ' => "st",
        _ => return out.push(c),
    };
    out.push_str(letters);
}

/// `fix_character_width`: the ideographic space and the halfwidth / fullwidth forms
/// block become their ordinary forms (their NFKC).
fn fix_character_width(c: char, out: &mut String) {
    match c {
        '\u{3000}' => out.push(' '),
        '\u{FF01}'..='\u{FFEF}' => out.push_str(&nfkc(c)),
        _ => out.push(c),
    }
}

/// `uncurl_quotes`: curly (and modifier-letter) quotes become ASCII quotes.
fn uncurl_quote(c: char, out: &mut String) {
    out.push(match c {
        '\u{2BC}' | '\u{2018}'..='\u{201B}' => '\'',
        '\u{201C}'..='\u{201F}' => '"',
        _ => c,
    });
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

fn nfkc(c: char) -> String {
    let mut n = NormalizedString::from(c.to_string().as_str());
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
            (
                "\u{FB01}ne \u{FF54}\u{FF45}\u{FF53}\u{FF54}\u{3000}x",
                "fine test x",
            ),
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
