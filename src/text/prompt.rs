//! A1111's prompt emphasis syntax: text split into pieces, each with a weight.
//!
//! - `(text)` multiplies the weight of `text` by 1.1, `[text]` divides it by 1.1;
//! - `(text:1.3)` multiplies it by 1.3 (any `[+-]?[.0-9]+` number, negative included);
//! - nesting multiplies: `((text))` is 1.21, `[(text)]` is 1.0;
//! - `\(`, `\)`, `\[`, `\]`, `\\` are the literal characters; a backslash before
//!   anything else disappears (as in A1111);
//! - an unmatched `)` or `]` is literal text; an unclosed `(` or `[` applies its factor to
//!   everything after it up to the end of the prompt;
//! - `BREAK` (upper case, a whole word) ends the current 75-token chunk;
//! - adjacent pieces of equal weight are joined before tokenizing, as A1111 does, so
//!   `(a)(b)` is the single word `ab` at 1.1.
//!
//! Differences from A1111, both to A1111 bugs: `BREAK` inside brackets still breaks
//! (A1111 multiplies its marker's weight and then encodes the word `BREAK` with a
//! negative weight), and a weight that is not a number (`(x:1.2.3)`) is an error naming
//! it (A1111 raises a Python exception). Prompt editing (`[a:b:0.5]`), alternation
//! (`[a|b]`) and `AND` are not supported: they are read as ordinary text.

use std::sync::LazyLock;

use regex::Regex;

use crate::{Error, Result};

/// One piece of a parsed prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Text and its emphasis weight (f64, as A1111 computes it, so that equal weights
    /// compare equal the same way when pieces are joined).
    Text { text: String, weight: f64 },
    /// `BREAK`: start a new chunk.
    Break,
}

const ROUND: f64 = 1.1;
const SQUARE: f64 = 1.0 / 1.1;

/// The alternatives of A1111's `re_attention`, in its order (leftmost-first).
static ATTENTION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"\\\(|\\\)|\\\[|\\\]|\\\\|\\|", // escapes, and a lone backslash
        r"\(|\[|",                       // openers
        r":\s*([+-]?[.0-9]+)\s*\)|",     // explicit weight closing a `(`
        r"\)|\]|",                       // closers
        r"[^\\()\[\]:]+|:",              // text
    ))
    .expect("valid regex")
});

static BREAK: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\s*\bBREAK\b\s*").expect("valid regex"));

/// Parses `prompt` into weighted pieces. Never empty: an empty prompt is one empty piece.
pub fn parse(prompt: &str) -> Result<Vec<Piece>> {
    let mut pieces: Vec<Piece> = Vec::new();
    let mut round: Vec<usize> = Vec::new();
    let mut square: Vec<usize> = Vec::new();

    for caps in ATTENTION.captures_iter(prompt) {
        let token = &caps[0];
        if let Some(literal) = token.strip_prefix('\\') {
            push_text(&mut pieces, literal);
        } else if token == "(" {
            round.push(pieces.len());
        } else if token == "[" {
            square.push(pieces.len());
        } else if let (Some(number), Some(start)) = (caps.get(1), round.last().copied()) {
            let weight: f64 = number.as_str().parse().map_err(|_| {
                Error::invalid(
                    "prompt",
                    format!(
                        "emphasis weight {:?} in {token:?} is not a number",
                        number.as_str()
                    ),
                )
            })?;
            round.pop();
            multiply(&mut pieces[start..], weight);
        } else if let (")", Some(start)) = (token, round.last().copied()) {
            round.pop();
            multiply(&mut pieces[start..], ROUND);
        } else if let ("]", Some(start)) = (token, square.last().copied()) {
            square.pop();
            multiply(&mut pieces[start..], SQUARE);
        } else {
            for (i, part) in BREAK.split(token).enumerate() {
                if i > 0 {
                    pieces.push(Piece::Break);
                }
                push_text(&mut pieces, part);
            }
        }
    }
    // Unclosed brackets weigh everything from their position on.
    for start in round {
        multiply(&mut pieces[start..], ROUND);
    }
    for start in square {
        multiply(&mut pieces[start..], SQUARE);
    }
    if pieces.is_empty() {
        push_text(&mut pieces, "");
    }
    Ok(join_equal_weights(pieces))
}

fn push_text(pieces: &mut Vec<Piece>, text: &str) {
    pieces.push(Piece::Text {
        text: text.to_string(),
        weight: 1.0,
    });
}

fn multiply(pieces: &mut [Piece], factor: f64) {
    for piece in pieces {
        if let Piece::Text { weight, .. } = piece {
            *weight *= factor;
        }
    }
}

/// A1111 joins neighbouring pieces whose weights are exactly equal (empty ones included,
/// which is why `a\b` reads as `ab`).
fn join_equal_weights(pieces: Vec<Piece>) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::with_capacity(pieces.len());
    for piece in pieces {
        if let (
            Some(Piece::Text { text, weight }),
            Piece::Text {
                text: next,
                weight: next_weight,
            },
        ) = (out.last_mut(), &piece)
        {
            if *weight == *next_weight {
                text.push_str(next);
                continue;
            }
        }
        out.push(piece);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str, weight: f64) -> Piece {
        Piece::Text {
            text: text.into(),
            weight,
        }
    }

    fn parsed(prompt: &str) -> Vec<Piece> {
        parse(prompt).unwrap()
    }

    // The examples of A1111's `parse_prompt_attention` docstring, with its outputs.
    #[test]
    fn a1111_docstring_examples() {
        assert_eq!(parsed("normal text"), [t("normal text", 1.0)]);
        assert_eq!(
            parsed("an (important) word"),
            [t("an ", 1.0), t("important", 1.1), t(" word", 1.0)]
        );
        assert_eq!(parsed("(unbalanced"), [t("unbalanced", 1.1)]);
        assert_eq!(parsed(r"\(literal\]"), [t("(literal]", 1.0)]);
        assert_eq!(parsed("(unnecessary)(parens)"), [t("unnecessaryparens", 1.1)]);
        assert_eq!(
            parsed("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."),
            [
                t("a ", 1.0),
                t("house", 1.5730000000000004),
                t(" ", 1.1),
                t("on", 1.0),
                t(" a ", 1.1),
                t("hill", 0.55),
                t(", sun, ", 1.1),
                t("sky", 1.4641000000000006),
                t(".", 1.1),
            ]
        );
    }

    // Expected weights below are those A1111's parser computes (Python floats).
    #[test]
    fn brief_example() {
        assert_eq!(
            parsed("a (b:1.5) [c] ((d))"),
            [
                t("a ", 1.0),
                t("b", 1.5),
                t(" ", 1.0),
                t("c", 0.9090909090909091),
                t(" ", 1.0),
                t("d", 1.2100000000000002),
            ]
        );
    }

    #[test]
    fn escapes_and_backslashes() {
        assert_eq!(parsed(r"\(a\) \[b\] c\\d"), [t(r"(a) [b] c\d", 1.0)]);
        assert_eq!(parsed(r"a\b"), [t("ab", 1.0)]);
        assert_eq!(parsed(r"(a\)b)"), [t("a)b", 1.1)]);
        assert_eq!(parsed("trailing\\"), [t("trailing", 1.0)]);
    }

    #[test]
    fn unbalanced_brackets() {
        assert_eq!(parsed("a) b] c"), [t("a) b] c", 1.0)]);
        assert_eq!(parsed("[a (b"), [t("a ", 0.9090909090909091), t("b", 1.0)]);
        assert_eq!(parsed("x:1.2)"), [t("x:1.2)", 1.0)]);
        assert_eq!(parsed("(a:2"), [t("a:2", 1.1)]);
    }

    #[test]
    fn explicit_weights() {
        assert_eq!(parsed("(a: 1.5 )"), [t("a", 1.5)]);
        assert_eq!(parsed("(a:-1)"), [t("a", -1.0)]);
        assert_eq!(parsed("(a:.5)"), [t("a", 0.5)]);
        assert_eq!(parsed("[(a:1.5)]"), [t("a", 1.3636363636363635)]);
        assert_eq!(parsed("(a:0)"), [t("a", 0.0)]);
        let err = parse("(a:1.2.3)").unwrap_err().to_string();
        assert!(err.contains("1.2.3") && err.contains("prompt"), "{err}");
    }

    #[test]
    fn breaks() {
        assert_eq!(parsed("a BREAK b"), [t("a", 1.0), Piece::Break, t("b", 1.0)]);
        assert_eq!(parsed("aBREAK b"), [t("aBREAK b", 1.0)]);
        assert_eq!(parsed("a break b"), [t("a break b", 1.0)]);
        assert_eq!(parsed("BREAK"), [t("", 1.0), Piece::Break, t("", 1.0)]);
        assert_eq!(
            parsed("(a BREAK b)"),
            [t("a", 1.1), Piece::Break, t("b", 1.1)],
            "BREAK inside brackets still breaks"
        );
    }

    #[test]
    fn empty_prompt_is_one_empty_piece() {
        assert_eq!(parsed(""), [t("", 1.0)]);
        assert_eq!(parsed("()"), [t("", 1.0)]);
    }
}
