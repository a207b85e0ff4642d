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
        let bad = |m: String| Error::bad_file(path, format!("textual-inversion embedding: {m}"));
        // Shapes are checked before any tensor data is read (or inflated: a deflated
        // zip entry can hold gigabytes in a few kilobytes).
        let found = if sniff(&bytes) == Format::Safetensors {
            let st = SafetensorsFile::from_bytes(path.to_path_buf(), bytes)?;
            let (trigger, name) = find_safetensors(&st, &stem).map_err(bad)?;
            let shape = st.info(&name).expect("listed name").shape;
            let (n, width) = check_shape(&trigger, &shape).map_err(bad)?;
            let values = st.read(&name, DType::F32)?.to_f32().into_owned();
            (trigger, n, width, values)
        } else {
            let file = TorchFile::from_bytes(path.to_path_buf(), bytes)?;
            let (trigger, tensor) = find_torch(&file, &stem).map_err(bad)?;
            let (n, width) = check_shape(&trigger, &tensor.shape).map_err(bad)?;
            let storage = tensor.storage.numel.saturating_mul(tensor.storage.elem.size());
            if storage > MAX_STORAGE {
                return Err(bad(format!(
                    "{trigger:?} is a view of a {storage}-byte storage, more than an embedding \
                     ever carries ({MAX_STORAGE} bytes): a damaged or hostile file"
                )));
            }
            let values = file.tensor_f32(&tensor)?;
            (trigger, n, width, values)
        };
        let (trigger, n, width, vectors) = found;
        if vectors.iter().any(|v| !v.is_finite()) {
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
            vectors,
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

/// Vectors per embedding: a prompt chunk's 75 tokens (A1111 and we refuse more).
const MAX_VECTORS: usize = crate::text::CHUNK_TOKENS;

/// Widest text encoder an embedding could target: SD 1.x 768, SD 2.x 1024, SDXL 1280.
/// A declared width beyond this is a hostile or broken file, refused before reading.
const MAX_WIDTH: usize = 4096;

/// Bytes of the storage a torch embedding's tensor views (all of it is read, and
/// inflated when deflated). An embedding saved as a view of the text encoder's whole
/// token-embedding matrix carries that matrix: 49408 x 1024 f32 = 202 MB for SD 2.x.
/// More is no embedding: a deflated zip entry can claim a gigabyte in one megabyte.
const MAX_STORAGE: usize = 256 << 20;

/// A model file given as an embedding lists this many tensor names, no more.
const NAMES_SHOWN: usize = 3;

/// `(n, width)` of a `[width]` or `[n, width]` shape, within the limits above.
fn check_shape(trigger: &str, shape: &[usize]) -> std::result::Result<(usize, usize), String> {
    let (n, width) = match *shape {
        [w] => (1, w),
        [n, w] => (n, w),
        _ => {
            return Err(format!(
                "{trigger:?} has shape {shape:?}, expected [width] or [n, width]"
            ))
        }
    };
    if n == 0 || width == 0 {
        return Err(format!("{trigger:?} is empty (shape {shape:?})"));
    }
    if n > MAX_VECTORS {
        return Err(format!(
            "{trigger:?} has {n} vectors; a prompt chunk holds 1 to {MAX_VECTORS}"
        ));
    }
    if width > MAX_WIDTH {
        return Err(format!(
            "{trigger:?} has vectors of width {width}; text encoders are at most {MAX_WIDTH} wide"
        ));
    }
    Ok((n, width))
}

/// The message for a file of several tensors, none of them an embedding's. A model
/// checkpoint has hundreds: it is called what it likely is, with its tensor count and
/// the first few names only.
fn several_tensors(names: &[&str], expected: &str) -> String {
    let shown = names
        .iter()
        .take(NAMES_SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > NAMES_SHOWN {
        format!(
            "this looks like a model checkpoint, not an embedding: {} tensors ({shown}, ...); \
             expected {expected}",
            names.len()
        )
    } else {
        format!("{} tensors ({shown}), expected {expected}", names.len())
    }
}

fn sdxl_check<'a>(mut keys: impl Iterator<Item = &'a str>) -> std::result::Result<(), String> {
    if keys.any(|k| k == "clip_g" || k == "clip_l") {
        return Err("an SDXL embedding (clip_l / clip_g vectors): SDXL is not supported yet".into());
    }
    Ok(())
}

/// The trigger and the tensor of a torch embedding file.
fn find_torch(f: &TorchFile, stem: &str) -> std::result::Result<(String, TensorRef), String> {
    let p = f.pickle();
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
        return Ok((stem.to_string(), t.clone()));
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
        [(key, t)] => Ok((key.to_string(), t.clone())),
        [] => {
            let unknown = "unknown layout: no `string_to_param` and no {\"<token>\": tensor} entry";
            Err(match f.state_dict() {
                Ok(sd) if sd.len() > NAMES_SHOWN => {
                    let names: Vec<&str> = sd.keys().map(String::as_str).collect();
                    format!("{unknown}; {}", several_tensors(&names, "an embedding"))
                }
                _ => unknown.into(),
            })
        }
        _ => {
            let names: Vec<&str> = tensors.iter().map(|(k, _)| *k).collect();
            Err(several_tensors(&names, "one {\"<token>\": tensor} entry"))
        }
    }
}

/// The trigger and the tensor name of a safetensors embedding file.
fn find_safetensors(st: &SafetensorsFile, stem: &str) -> std::result::Result<(String, String), String> {
    let names = st.names();
    sdxl_check(names.iter().map(String::as_str))?;
    if names.iter().any(|n| n == "emb_params") {
        return Ok((stem.to_string(), "emb_params".to_string()));
    }
    match &names[..] {
        [one] => Ok((one.clone(), one.clone())),
        [] => match st.other_tensors().first() {
            Some((name, dtype)) => Err(format!("tensor {name:?} holds {dtype} values, not float vectors")),
            None => Err("the file holds no tensors".into()),
        },
        _ => {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            Err(several_tensors(
                &names,
                "`emb_params` or a single {\"<token>\": tensor} entry",
            ))
        }
    }
}
