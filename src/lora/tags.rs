//! A1111's prompt tags `<lora:NAME:WEIGHT>` and the folder they name files in.
//!
//! As A1111 (`extra_networks.py`, `extra_networks_lora.py`): a tag is
//! `<TYPE:ARGS>` with TYPE a word and ARGS up to the next `>`, split at `:`;
//! the tags are cut out of the prompt before it is encoded (the text around
//! them is left as it is) and the prompt keeps them in the infotext. For
//! `lora` (and its alias `lyco`): `<lora:NAME>`, `<lora:NAME:W>` (both
//! networks), `<lora:NAME:TE_W:UNET_W>` (A1111's order: text encoder first),
//! or named `te=W` / `unet=W`. Other types (`hypernet`...) are refused: a tag
//! silently ignored would change nothing the user asked for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::LoraSpec;
use crate::{Error, Result};

/// A `<lora:...>` tag of a prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    pub name: String,
    pub text_encoder_weight: f32,
    pub unet_weight: f32,
}

/// Byte ranges and (type, args) of every `<word:args>` in `prompt`.
fn scan(prompt: &str) -> Vec<(std::ops::Range<usize>, &str, &str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = prompt[from..].find('<').map(|i| from + i) {
        from = open + 1;
        let rest = &prompt[open + 1..];
        let word = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if word == 0 || !rest[word..].starts_with(':') {
            continue;
        }
        let args_at = word + 1;
        let Some(close) = rest[args_at..].find('>') else {
            continue;
        };
        if close == 0 {
            continue;
        }
        let end = open + 1 + args_at + close + 1;
        out.push((open..end, &rest[..word], &rest[args_at..args_at + close]));
        from = end;
    }
    out
}

/// The prompt without its tags, as the text encoder sees it.
pub fn strip_tags(prompt: &str) -> String {
    let mut out = String::with_capacity(prompt.len());
    let mut at = 0;
    for (range, _, _) in scan(prompt) {
        out.push_str(&prompt[at..range.start]);
        at = range.end;
    }
    out.push_str(&prompt[at..]);
    out
}

/// The `<lora:...>` tags of `prompt`; `flag` names it in errors.
pub fn parse_tags(prompt: &str, flag: &str) -> Result<Vec<Tag>> {
    let mut tags = Vec::new();
    for (range, kind, args) in scan(prompt) {
        let text = &prompt[range];
        if kind != "lora" && kind != "lyco" {
            return Err(Error::invalid(
                flag,
                format!("{text}: extra networks of type {kind:?} are not supported (sd-wgpu applies <lora:NAME:WEIGHT>)"),
            ));
        }
        tags.push(parse_lora(text, args).map_err(|m| Error::invalid(flag, format!("{text}: {m}")))?);
    }
    Ok(tags)
}

fn parse_lora(text: &str, args: &str) -> Result<Tag, String> {
    let number = |s: &str| -> Result<f32, String> {
        s.trim()
            .parse::<f32>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("expected a weight such as 0.8, found {s:?}"))
    };
    let (mut positional, mut named) = (Vec::new(), BTreeMap::new());
    for item in args.split(':') {
        match item.split_once('=') {
            Some((k, v)) => {
                named.insert(k.trim(), v);
            }
            None => positional.push(item),
        }
    }
    let name = positional.first().map(|s| s.trim()).unwrap_or("");
    if name.is_empty() {
        return Err("no LoRA name: expected <lora:NAME:WEIGHT>".into());
    }
    if positional.len() > 3 {
        return Err(format!(
            "{} values after the name; expected <lora:NAME:WEIGHT> or <lora:NAME:TE_WEIGHT:UNET_WEIGHT>",
            positional.len() - 1
        ));
    }
    let mut te = positional.get(1).map(|s| number(s)).transpose()?.unwrap_or(1.0);
    if let Some(v) = named.remove("te") {
        te = number(v)?;
    }
    let mut unet = positional.get(2).map(|s| number(s)).transpose()?.unwrap_or(te);
    if let Some(v) = named.remove("unet") {
        unet = number(v)?;
    }
    if let Some(k) = named.keys().next() {
        return Err(format!("unknown setting {k:?} in {text} (known: te=, unet=)"));
    }
    Ok(Tag {
        name: name.to_string(),
        text_encoder_weight: te,
        unet_weight: unet,
    })
}

/// The LoRA files of a folder and its subfolders (`.safetensors`, `.pt`,
/// `.ckpt`), by file name without extension: what `<lora:NAME>` names.
pub struct LoraDir {
    dir: PathBuf,
    files: BTreeMap<String, Vec<PathBuf>>,
}

const EXTENSIONS: [&str; 3] = ["safetensors", "pt", "ckpt"];

impl LoraDir {
    /// Lists `dir`; `flag` names it in errors.
    pub fn scan(dir: &Path, flag: &str) -> Result<LoraDir> {
        if !dir.is_dir() {
            return Err(Error::invalid(flag, format!("{} is not a folder", dir.display())));
        }
        let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let entries = std::fs::read_dir(&d).map_err(|e| Error::io(d.display().to_string(), e))?;
            for entry in entries {
                let path = entry.map_err(|e| Error::io(d.display().to_string(), e))?.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let ext = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .map(str::to_ascii_lowercase);
                if !ext.is_some_and(|e| EXTENSIONS.contains(&e.as_str())) {
                    continue;
                }
                if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                    files.entry(stem.to_string()).or_default().push(path.clone());
                }
            }
        }
        Ok(LoraDir {
            dir: dir.to_path_buf(),
            files,
        })
    }

    /// Every file with the name tags use for it, sorted by name.
    pub fn files(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.files
            .iter()
            .flat_map(|(name, paths)| paths.iter().map(move |p| (name.as_str(), p.as_path())))
    }

    /// The names tags may use, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.files.keys().map(String::as_str).collect()
    }

    /// The file a tag names, with the tag's weights.
    pub fn resolve(&self, tag: &Tag) -> Result<LoraSpec> {
        let path = match self.files.get(&tag.name).map(Vec::as_slice) {
            Some([one]) => one.clone(),
            Some(many) => {
                let list: Vec<String> = many.iter().map(|p| p.display().to_string()).collect();
                return Err(Error::invalid(
                    "--lora-dir",
                    format!("<lora:{}> is ambiguous: {}", tag.name, list.join(", ")),
                ));
            }
            None => {
                let names = self.names();
                let has = if names.is_empty() {
                    "no .safetensors, .pt or .ckpt file".to_string()
                } else {
                    let mut s = names.iter().take(30).cloned().collect::<Vec<_>>().join(", ");
                    if names.len() > 30 {
                        s.push_str(&format!(", ... ({} in all)", names.len()));
                    }
                    s
                };
                return Err(Error::invalid(
                    "--lora-dir",
                    format!(
                        "no LoRA named {:?} in {}; it has: {has}",
                        tag.name,
                        self.dir.display()
                    ),
                ));
            }
        };
        Ok(LoraSpec {
            path,
            name: tag.name.clone(),
            unet_weight: tag.unet_weight,
            text_encoder_weight: tag.text_encoder_weight,
        })
    }
}

/// The LoRAs a request asks for: `fixed` (`--lora`), then the prompt's tags
/// resolved in `dir`. Tags in the negative prompt are refused (A1111 does not
/// apply them either; they would only be cut out).
pub fn specs_for_prompt(
    prompt: &str,
    negative_prompt: &str,
    fixed: &[LoraSpec],
    dir: Option<&LoraDir>,
) -> Result<Vec<LoraSpec>> {
    if let Some(t) = scan(negative_prompt).first() {
        return Err(Error::invalid(
            "--negative-prompt",
            format!(
                "{}: LoRA tags belong in the prompt",
                &negative_prompt[t.0.clone()]
            ),
        ));
    }
    let mut specs = fixed.to_vec();
    for tag in parse_tags(prompt, "--prompt")? {
        let dir = dir.ok_or_else(|| {
            Error::invalid(
                "--prompt",
                format!("<lora:{}> needs --lora-dir (the folder of LoRA files)", tag.name),
            )
        })?;
        specs.push(dir.resolve(&tag)?);
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, te: f32, unet: f32) -> Tag {
        Tag {
            name: name.into(),
            text_encoder_weight: te,
            unet_weight: unet,
        }
    }

    #[test]
    fn tags_as_a1111_reads_them() {
        let p = "a fox <lora:fox_v2:0.8>, snow <lora:style:0.5:1.2> <lyco:x> <lora:y:te=0.3:unet=-1>";
        assert_eq!(
            parse_tags(p, "--prompt").unwrap(),
            vec![
                tag("fox_v2", 0.8, 0.8),
                tag("style", 0.5, 1.2),
                tag("x", 1.0, 1.0),
                tag("y", 0.3, -1.0)
            ]
        );
        assert_eq!(strip_tags(p), "a fox , snow   ");
        assert_eq!(
            strip_tags("a <b> c <d:> <e f:1> <lora:z"),
            "a <b> c <d:> <e f:1> <lora:z"
        );
        assert!(parse_tags("<lora:z>", "--prompt").is_ok());
    }

    #[test]
    fn bad_tags_are_refused() {
        for (p, want) in [
            ("<lora:a:x>", "expected a weight"),
            ("<lora:a:nan>", "expected a weight"),
            ("<lora::1>", "no LoRA name"),
            ("<lora:a:1:2:3>", "3 values after the name"),
            ("<lora:a:dyn=4>", "unknown setting \"dyn\""),
            ("<hypernet:h:1>", "type \"hypernet\" are not supported"),
        ] {
            let e = parse_tags(p, "--prompt").unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("--prompt"), "{p}: {e}");
        }
        let e = specs_for_prompt("a", "b <lora:x:1>", &[], None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--negative-prompt") && e.contains("belong in the prompt"),
            "{e}"
        );
        let e = specs_for_prompt("a <lora:x:1>", "", &[], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs --lora-dir"), "{e}");
    }

    #[test]
    fn folder_lookup() {
        let dir = std::env::temp_dir().join(format!("sdw-loradir-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for f in ["a.safetensors", "sub/b.pt", "notes.txt", "sub/a.ckpt"] {
            std::fs::write(dir.join(f), b"").unwrap();
        }
        let d = LoraDir::scan(&dir, "--lora-dir").unwrap();
        assert_eq!(d.names(), vec!["a", "b"]);
        let spec = d.resolve(&tag("b", 0.5, 0.25)).unwrap();
        assert_eq!(
            (spec.path, spec.unet_weight, spec.text_encoder_weight),
            (dir.join("sub/b.pt"), 0.25, 0.5)
        );
        let e = d.resolve(&tag("a", 1.0, 1.0)).unwrap_err().to_string();
        assert!(e.contains("ambiguous"), "{e}");
        let e = d.resolve(&tag("c", 1.0, 1.0)).unwrap_err().to_string();
        assert!(
            e.contains("no LoRA named \"c\"") && e.contains("it has: a, b"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
