//! Textual-inversion files -> [`Embedding`].
//!
//! Layouts (docs/formats.md), recognised by content, not by extension:
//! - sd-concepts-library `learned_embeds.bin` (torch zip) and diffusers'
//!   `learned_embeds.safetensors`: `{"<token>": [768] or [n, 768]}`, trigger = the key;
//! - A1111 / LDM `.pt`: `{"string_to_param": {"*": [n, 768]}, ..}` (a dict or
//!   an `nn.ParameterDict`), trigger = file stem;
//! - `.safetensors` with `emb_params` (kohya, A1111), trigger = file stem.
//!
//! Checks against the text encoder (width, trigger already a word of the
//! vocabulary, duplicate triggers) belong to the code that owns the tokenizer:
//! [`Embedding::validate_width`] is provided for it.

use std::path::Path;

use super::bytes::{sniff, FileBytes, Format};
use super::pickle::{Node, TensorRef};
use super::{Embedding, SafetensorsFile, TorchFile};
use crate::tensor::DType;
use crate::weights::TensorSource;
use crate::{Error, Result};

impl Embedding {
    /// Reads a textual-inversion file of any supported layout.
    pub fn load(path: impl AsRef<Path>) -> Result<Embedding> {
        let path = path.as_ref();
        let bytes = FileBytes::map(path)?;
        Self::from_bytes(path, bytes)
    }

    /// As [`Embedding::load`], from bytes read elsewhere; `path` gives the
    /// name in messages and the trigger of stem-named layouts.
    pub fn from_bytes(path: &Path, bytes: FileBytes) -> Result<Embedding> {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (trigger, shape, values) = if sniff(&bytes) != Format::Safetensors {
            from_torch(&TorchFile::from_bytes(path.to_path_buf(), bytes)?, &stem)
        } else {
            from_safetensors(&SafetensorsFile::from_bytes(path.to_path_buf(), bytes)?, &stem)
        }
        .map_err(|m| Error::bad_file(path, format!("textual-inversion embedding: {m}")))?;
        let (n, width) = match shape[..] {
            [w] => (1, w),
            [n, w] => (n, w),
            _ => {
                return Err(Error::bad_file(
                    path,
                    format!("embedding {trigger:?} has shape {shape:?}, expected [width] or [n, width]"),
                ))
            }
        };
        if n == 0 || width == 0 {
            return Err(Error::bad_file(
                path,
                format!("embedding {trigger:?} is empty (shape {shape:?})"),
            ));
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(Error::bad_file(
                path,
                format!("embedding {trigger:?} contains NaN or infinite values"),
            ));
        }
        if trigger.trim().is_empty() {
            return Err(Error::bad_file(path, "embedding has an empty trigger word"));
        }
        Ok(Embedding {
            trigger,
            n,
            width,
            vectors: values,
        })
    }

    /// Refuses vectors whose width is not the text encoder's (`expected`).
    pub fn validate_width(&self, expected: usize) -> Result<()> {
        if self.width == expected {
            return Ok(());
        }
        let hint = match self.width {
            1024 => " (an SD 2.x embedding?)",
            1280 => " (an SDXL embedding?)",
            768 => " (an SD 1.x embedding?)",
            _ => "",
        };
        Err(Error::invalid(
            "embedding",
            format!(
                "{:?} has vectors of width {}{hint}, but the text encoder's width is {expected}",
                self.trigger, self.width
            ),
        ))
    }
}

type Found = (String, Vec<usize>, Vec<f32>);

fn sdxl_check<'a>(mut keys: impl Iterator<Item = &'a str>) -> std::result::Result<(), String> {
    if keys.any(|k| k == "clip_g" || k == "clip_l") {
        return Err("an SDXL embedding (clip_l / clip_g vectors): SDXL is not supported yet".into());
    }
    Ok(())
}

fn from_torch(f: &TorchFile, stem: &str) -> std::result::Result<Found, String> {
    let p = f.pickle();
    let tensor_f32 = |t: &TensorRef| f.tensor_f32(t).map_err(|e| e.to_string());
    if let Some(params) = p.get(p.root, "string_to_param") {
        let items = p
            .dict_items(params)
            .ok_or_else(|| format!("`string_to_param` is {}, expected a dict", p.kind(params)))?;
        let tensors: Vec<&TensorRef> = items
            .iter()
            .filter_map(|&(_, v)| match p.node(v) {
                Node::Tensor(t) => Some(t),
                _ => None,
            })
            .collect();
        let [t] = tensors[..] else {
            return Err(format!(
                "`string_to_param` holds {} tensors, expected exactly one",
                tensors.len()
            ));
        };
        return Ok((stem.to_string(), t.shape.clone(), tensor_f32(t)?));
    }
    let items = p.dict_items(p.root).ok_or_else(|| {
        format!(
            "unknown layout: the file holds {}, expected a dict (sd-concepts-library or A1111 layout)",
            p.kind(p.root)
        )
    })?;
    sdxl_check(items.iter().filter_map(|&(k, _)| p.str(k)))?;
    let tensors: Vec<(&str, &TensorRef)> = items
        .iter()
        .filter_map(|&(k, v)| match (p.str(k), p.node(v)) {
            (Some(k), Node::Tensor(t)) => Some((k, t)),
            _ => None,
        })
        .collect();
    match tensors[..] {
        [(key, t)] => Ok((key.to_string(), t.shape.clone(), tensor_f32(t)?)),
        [] => Err("unknown layout: no `string_to_param` and no {\"<token>\": tensor} entry".into()),
        _ => Err(format!(
            "{} tensors ({}), expected one {{\"<token>\": tensor}} entry",
            tensors.len(),
            tensors.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
        )),
    }
}

fn from_safetensors(st: &SafetensorsFile, stem: &str) -> std::result::Result<Found, String> {
    let names = st.names();
    sdxl_check(names.iter().map(String::as_str))?;
    let read = |name: &str| -> std::result::Result<Found, String> {
        let info = st.info(name).expect("listed name");
        let values = st.read(name, DType::F32).map_err(|e| e.to_string())?;
        Ok((String::new(), info.shape, values.to_f32().into_owned()))
    };
    if names.iter().any(|n| n == "emb_params") {
        let (_, shape, v) = read("emb_params")?;
        return Ok((stem.to_string(), shape, v));
    }
    match &names[..] {
        [one] => {
            let (_, shape, v) = read(one)?;
            Ok((one.clone(), shape, v))
        }
        [] => match st.other_tensors().first() {
            Some((name, dtype)) => Err(format!("tensor {name:?} holds {dtype} values, not float vectors")),
            None => Err("the file holds no tensors".into()),
        },
        _ => Err(format!(
            "{} tensors ({}), expected `emb_params` or a single {{\"<token>\": tensor}} entry",
            names.len(),
            names.join(", ")
        )),
    }
}
