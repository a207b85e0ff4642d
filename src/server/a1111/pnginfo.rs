//! `POST /sdapi/v1/png-info`: an image's text chunks, and its A1111 `parameters` text
//! parsed into fields the way A1111's `parse_generation_parameters` reads it, so that a
//! client that pastes settings from a picture gets the same keys from us.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

/// The `parameters` text of a PNG and its other text chunks (tEXt, zTXt, iTXt), `None` when
/// `bytes` is not a PNG (A1111 reads other formats' EXIF; we write PNG only).
pub fn text_chunks(bytes: &[u8]) -> Option<(String, Map<String, Value>)> {
    let reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().ok()?;
    let info = reader.info();
    let mut items = Map::new();
    let mut parameters = String::new();
    let latin1 = info
        .uncompressed_latin1_text
        .iter()
        .map(|c| (c.keyword.clone(), Some(c.text.clone())));
    let compressed = info
        .compressed_latin1_text
        .iter()
        .map(|c| (c.keyword.clone(), c.get_text().ok()));
    let utf8 = info
        .utf8_text
        .iter()
        .map(|c| (c.keyword.clone(), c.get_text().ok()));
    for (key, text) in latin1.chain(compressed).chain(utf8) {
        let Some(text) = text else { continue };
        if key == "parameters" {
            parameters = text;
        } else {
            items.insert(key, Value::String(text));
        }
    }
    Some((parameters, items))
}

/// `Key: value` pairs of the last line: a value is a quoted string (with `\` escapes) or
/// runs to the next comma.
static PARAM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)"#).expect("valid regex")
});

/// `WxH` values (`Size: 512x768`), split by A1111 into `Size-1` and `Size-2`.
static SIZE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^(\d+)x(\d+)$").expect("valid regex"));

/// The `parameters` text as A1111's fields: `Prompt`, `Negative prompt`, each `Key: value`
/// of the last line (values as strings), sizes split, and `Clip skip` / `Schedule type` as
/// A1111 fills them in when absent.
pub fn parse_parameters(text: &str) -> Map<String, Value> {
    let mut lines: Vec<&str> = text.trim().split('\n').collect();
    let last = lines.pop().unwrap_or("");
    // A last line with fewer than 3 pairs is still part of the prompt.
    let params_line = if PARAM.captures_iter(last).count() >= 3 {
        last
    } else {
        lines.push(last);
        ""
    };
    let (mut prompt, mut negative) = (Vec::new(), Vec::new());
    let mut in_negative = false;
    for line in lines {
        let mut line = line.trim();
        if let Some(rest) = line.strip_prefix("Negative prompt:") {
            in_negative = true;
            line = rest.trim();
        }
        if in_negative {
            negative.push(line);
        } else {
            prompt.push(line);
        }
    }
    let mut res = Map::new();
    for cap in PARAM.captures_iter(params_line) {
        let key = cap[1].to_string();
        let raw = &cap[2];
        let value = if raw.len() >= 2 && raw.starts_with('"') && raw.ends_with('"') {
            serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.to_string())
        } else {
            raw.to_string()
        };
        match SIZE.captures(&value) {
            Some(size) => {
                res.insert(format!("{key}-1"), size[1].into());
                res.insert(format!("{key}-2"), size[2].into());
            }
            None => {
                res.insert(key, value.into());
            }
        }
    }
    res.insert("Prompt".into(), prompt.join("\n").into());
    res.insert("Negative prompt".into(), negative.join("\n").into());
    res.entry("Clip skip").or_insert_with(|| "1".into());
    res.entry("Schedule type").or_insert_with(|| "Automatic".into());
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::output::encode_png;
    use crate::pipeline::RgbImage;

    #[test]
    fn parses_what_we_write() {
        let text = "a red circle, (blue:1.2)\nsecond line\nNegative prompt: blurry\n\
                    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, \
                    Seed: 42, Size: 512x768, Model: demo, TI hashes: \"<teal>: abc123, <x>: def\", \
                    Version: sd-wgpu 0.1.0";
        let p = parse_parameters(text);
        assert_eq!(p["Prompt"], "a red circle, (blue:1.2)\nsecond line");
        assert_eq!(p["Negative prompt"], "blurry");
        assert_eq!(p["Steps"], "20");
        assert_eq!(p["Sampler"], "DPM++ 2M");
        assert_eq!(p["Schedule type"], "Karras");
        assert_eq!(p["CFG scale"], "7.5");
        assert_eq!(
            (p["Size-1"].as_str(), p["Size-2"].as_str()),
            (Some("512"), Some("768"))
        );
        assert_eq!(p["TI hashes"], "<teal>: abc123, <x>: def");
        assert_eq!(p["Clip skip"], "1");
        assert!(p.get("Size").is_none());
    }

    #[test]
    fn a_short_last_line_is_prompt() {
        let p = parse_parameters("just a prompt: with a colon");
        assert_eq!(p["Prompt"], "just a prompt: with a colon");
        assert_eq!(p["Negative prompt"], "");
        let p = parse_parameters("");
        assert_eq!(
            (p["Prompt"].as_str(), p["Clip skip"].as_str()),
            (Some(""), Some("1"))
        );
    }

    #[test]
    fn reads_png_chunks() {
        let img = RgbImage {
            width: 8,
            height: 8,
            data: vec![0.5; 8 * 8 * 3],
        };
        for text in [
            "a cat\nSteps: 4, Sampler: Euler, Seed: 1",
            "ein Kätzchen 猫\nSteps: 4, Sampler: Euler, Seed: 1",
        ] {
            let png = encode_png(&img, text).unwrap();
            let (params, items) = text_chunks(&png).unwrap();
            assert_eq!(params, text);
            assert!(items.is_empty());
        }
        assert!(text_chunks(b"\xff\xd8\xff not a png").is_none());
    }
}
