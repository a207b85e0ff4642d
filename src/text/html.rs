//! HTML character references, decoded the two ways CLIP's cleaning decodes them.
//!
//! - [`unescape`] follows Python's `html.unescape` (HTML5 rules: named references with
//!   or without `;` for the legacy names, longest legacy prefix, numeric references with
//!   the HTML5 replacements for invalid code points). CLIP applies it twice.
//! - [`unescape_strict`] follows ftfy's `unescape_html`, which runs first (inside
//!   `ftfy.fix_text`, only for text without `<`): only complete `&name;` / `&#n;` references,
//!   plus all-caps spellings of lowercase entity names (`&EACUTE;` -> `É`).
//!
//! The entity table is the WHATWG list shipped by the `htmlize` crate (the same 2231
//! entries as Python's `html.entities.html5`).

use std::borrow::Cow;
use std::sync::LazyLock;

use htmlize::ENTITIES;
use regex::{Captures, Regex};

/// Python's `html._charref`: `&` then a decimal / hex number or up to 32 name characters,
/// each with an optional `;`.
static CHARREF: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\x0C <&#;]{1,32};?)").expect("valid regex")
});

/// ftfy's `HTML_ENTITY_RE`: only complete references ending in `;`.
static STRICT_REF: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"&#?[0-9A-Za-z]{1,24};").expect("valid regex"));

/// Windows-1252 meaning of the bytes 0x80..=0x9F. HTML5 decodes `&#128;`..`&#159;` this
/// way, and ftfy's `fix_c1_controls` maps C1 control characters the same way. The five
/// bytes Windows-1252 leaves undefined map to themselves ("sloppy" decoding).
pub(crate) const WINDOWS_1252_C1: [char; 32] = [
    '\u{20AC}', '\u{81}', '\u{201A}', '\u{192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}', '\u{2C6}',
    '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8D}', '\u{17D}', '\u{8F}', '\u{90}', '\u{2018}',
    '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}', '\u{2DC}', '\u{2122}', '\u{161}',
    '\u{203A}', '\u{153}', '\u{9D}', '\u{17E}', '\u{178}',
];

/// Python's `html.unescape`.
pub fn unescape(text: &str) -> Cow<'_, str> {
    if !text.contains('&') {
        return Cow::Borrowed(text);
    }
    CHARREF.replace_all(text, |caps: &Captures| {
        let body = &caps[1];
        match body.strip_prefix('#') {
            Some(number) => numeric_reference(number),
            None => named_reference(body),
        }
    })
}

/// ftfy's `unescape_html`.
pub fn unescape_strict(text: &str) -> Cow<'_, str> {
    if !text.contains('&') {
        return Cow::Borrowed(text);
    }
    STRICT_REF.replace_all(text, |caps: &Captures| {
        let reference = &caps[0];
        if let Some(value) = entity(reference) {
            return value.to_string();
        }
        if reference.starts_with("&#") {
            // Numeric: keep it only if Python's decoder consumed the whole reference.
            let decoded = unescape(reference);
            return if decoded.contains(';') {
                reference.to_string()
            } else {
                decoded.into_owned()
            };
        }
        // An all-caps spelling of an entity whose name is lowercase, when the caps
        // spelling is not itself a reference (`&AMP;` is one, `&EACUTE;` is not).
        let lower = reference.to_lowercase();
        if lower != reference && lower.to_uppercase() == reference && unescape(reference) == reference {
            if let Some(value) = entity(&lower) {
                return value.to_uppercase();
            }
        }
        reference.to_string()
    })
}

/// The expansion of an exact entity spelling such as `&copy;` or the legacy `&copy`.
fn entity(reference: &str) -> Option<&'static str> {
    ENTITIES
        .get(reference.as_bytes())
        .map(|v| std::str::from_utf8(v).expect("entity table is UTF-8"))
}

/// `&name;` / `&name`: the exact name, else the longest legacy (semicolon-less) prefix of
/// at least two characters followed by the rest verbatim, else unchanged.
fn named_reference(body: &str) -> String {
    if let Some(value) = entity(&format!("&{body}")) {
        return value.to_string();
    }
    let boundaries: Vec<usize> = body.char_indices().map(|(i, _)| i).skip(2).collect();
    for &end in boundaries.iter().rev() {
        if let Some(value) = entity(&format!("&{}", &body[..end])) {
            return format!("{value}{}", &body[end..]);
        }
    }
    format!("&{body}")
}

/// `&#123;` / `&#x7B;` (the `#` already removed), with HTML5's replacements.
fn numeric_reference(number: &str) -> String {
    let digits = number.trim_end_matches(';');
    let value = match digits.strip_prefix(['x', 'X']) {
        Some(hex) => parse_saturating(hex, 16),
        None => parse_saturating(digits, 10),
    };
    match value {
        0 => '\u{FFFD}'.to_string(),
        0x0D => '\r'.to_string(),
        0x80..=0x9F => WINDOWS_1252_C1[(value - 0x80) as usize].to_string(),
        0xD800..=0xDFFF => '\u{FFFD}'.to_string(),
        v if v > 0x10FFFF => '\u{FFFD}'.to_string(),
        v if is_invalid_code_point(v) => String::new(),
        v => char::from_u32(v as u32).expect("checked range").to_string(),
    }
}

/// Code points Python's `html.unescape` drops: C0/C1 controls other than whitespace,
/// DEL, and the Unicode noncharacters.
fn is_invalid_code_point(v: u64) -> bool {
    matches!(v, 0x01..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F..=0x9F | 0xFDD0..=0xFDEF) || v & 0xFFFE == 0xFFFE
}

/// Digits (already validated by the regex) to a number, saturating: anything above
/// 0x10FFFF decodes the same way.
fn parse_saturating(digits: &str, radix: u32) -> u64 {
    digits.chars().fold(0u64, |acc, c| {
        let d = c.to_digit(radix).expect("regex admits only digits") as u64;
        acc.saturating_mul(radix as u64).saturating_add(d).min(0x11_0000)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values are Python 3.11's html.unescape and ftfy 6.3's unescape_html.
    #[test]
    fn python_unescape() {
        let cases = [
            ("&amp;", "&"),
            ("&amp", "&"),
            ("&ampfoo", "&foo"),
            ("&notit;", "¬it;"),
            ("&notin;", "∉"),
            ("&#65;&#x41;&#65", "AAA"),
            ("&#0;", "\u{FFFD}"),
            ("&#128;", "€"),
            ("&#129;", "\u{81}"),
            ("&#1;x", "x"),
            ("&#xD800;", "\u{FFFD}"),
            ("&#99999999999999999999999;", "\u{FFFD}"),
            ("&#xFFFE;", ""),
            ("&unknown;", "&unknown;"),
            ("&amp;amp;", "&amp;"),
            ("& amp;", "& amp;"),
            ("&#x;", "&#x;"),
        ];
        for (input, want) in cases {
            assert_eq!(unescape(input), want, "unescape({input:?})");
        }
    }

    #[test]
    fn ftfy_unescape() {
        let cases = [
            ("&amp;", "&"),
            ("&amp", "&amp"),
            ("P&EACUTE;REZ", "PÉREZ"),
            ("&SZLIG;", "SS"),
            ("&AMP;", "&"),
            ("&ntilde; &Ntilde; &NTILDE; &nTILDE;", "ñ Ñ Ñ &nTILDE;"),
            ("&notit;", "&notit;"),
            ("&#x2019;", "\u{2019}"),
            ("&#12ab;", "&#12ab;"),
        ];
        for (input, want) in cases {
            assert_eq!(unescape_strict(input), want, "unescape_strict({input:?})");
        }
    }
}
