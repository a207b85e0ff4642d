//! Memory-mapped safetensors files as a `TensorSource`, validated before use.
//!
//! Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
//! (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {..}}`),
//! then the tensor data, offsets relative to its start. Everything a corrupted,
//! truncated or hostile file can get wrong is checked here once (see
//! docs/formats.md, "safetensors: what is checked"), so reads never go out of bounds.
//!
//! Float tensors (f32, f16, bf16) are the weights: `names()` lists only them.
//! Other dtypes (the i64 `position_ids` of text encoders, bools...) are valid
//! but kept apart in [`SafetensorsFile::other_tensors`].
//! Tensor data may be unaligned: values are decoded with `from_le_bytes`,
//! never by reinterpreting the map in place.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::bytes::{is_lfs_pointer, FileBytes, LFS_HINT};
use crate::tensor::{CpuData, DType};
use crate::weights::{convert_bytes, StoredDType, TensorInfo, TensorSource};
use crate::{Error, Result};

/// Headers larger than this are refused (the reference implementation's limit).
const MAX_HEADER: u64 = 100_000_000;

/// Element types of the format. `Weight` types load; the others are only
/// validated (their byte counts must still add up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileDType {
    Weight(StoredDType),
    Other(&'static str, usize),
}

fn parse_dtype(s: &str) -> Option<FileDType> {
    use FileDType::*;
    Some(match s {
        "F32" => Weight(StoredDType::F32),
        "F16" => Weight(StoredDType::F16),
        "BF16" => Weight(StoredDType::BF16),
        "F64" => Other("F64", 8),
        "I64" => Other("I64", 8),
        "U64" => Other("U64", 8),
        "I32" => Other("I32", 4),
        "U32" => Other("U32", 4),
        "I16" => Other("I16", 2),
        "U16" => Other("U16", 2),
        "I8" => Other("I8", 1),
        "U8" => Other("U8", 1),
        "BOOL" => Other("BOOL", 1),
        "F8_E4M3" => Other("F8_E4M3", 1),
        "F8_E5M2" => Other("F8_E5M2", 1),
        "F8_E8M0" => Other("F8_E8M0", 1),
        "F8_E4M3FNUZ" => Other("F8_E4M3FNUZ", 1),
        "F8_E5M2FNUZ" => Other("F8_E5M2FNUZ", 1),
        "C64" => Other("C64", 8),
        _ => return None,
    })
}

impl FileDType {
    fn size(self) -> usize {
        match self {
            FileDType::Weight(d) => d.size(),
            FileDType::Other(_, s) => s,
        }
    }
}

struct Entry {
    dtype: FileDType,
    shape: Vec<usize>,
    /// Byte range inside the whole file.
    start: usize,
    end: usize,
}

/// A JSON object read as its list of (key, value) pairs, duplicates kept:
/// serde_json's own maps silently keep the last of two equal keys.
struct Pairs<T>(Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Pairs<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Pairs<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Pairs<T>, A::Error> {
                let mut v = Vec::new();
                while let Some(pair) = map.next_entry::<String, T>()? {
                    v.push(pair);
                }
                Ok(Pairs(v))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A value of the top-level object. Objects (tensor entries, `__metadata__`)
/// keep their pairs too, so a doubled `data_offsets` inside one entry is
/// caught as well.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Item {
    Object(Pairs<Value>),
    Other(serde::de::IgnoredAny),
}

pub struct SafetensorsFile {
    path: PathBuf,
    bytes: FileBytes,
    entries: HashMap<String, Entry>,
    /// Weight names, sorted.
    order: Vec<String>,
    metadata: BTreeMap<String, String>,
}

impl SafetensorsFile {
    /// Maps and validates `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SafetensorsFile> {
        let path = path.as_ref().to_path_buf();
        let bytes = FileBytes::map(&path)?;
        Self::from_bytes(path, bytes)
    }

    /// Validates `bytes` as a safetensors file; `path` names it in messages.
    pub fn from_bytes(path: PathBuf, bytes: FileBytes) -> Result<SafetensorsFile> {
        let (entries, metadata) = parse(&bytes).map_err(|msg| Error::bad_file(&path, msg))?;
        let mut order: Vec<String> = entries
            .iter()
            .filter(|(_, e)| matches!(e.dtype, FileDType::Weight(_)))
            .map(|(n, _)| n.clone())
            .collect();
        order.sort();
        Ok(SafetensorsFile {
            path,
            bytes,
            entries,
            order,
            metadata,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `__metadata__` strings.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Tensors that are not weights: (name, dtype), sorted by name.
    pub fn other_tensors(&self) -> Vec<(String, &'static str)> {
        let mut v: Vec<_> = self
            .entries
            .iter()
            .filter_map(|(n, e)| match e.dtype {
                FileDType::Other(d, _) => Some((n.clone(), d)),
                FileDType::Weight(_) => None,
            })
            .collect();
        v.sort();
        v
    }
}

/// Parses and checks the header; returns the entries with absolute byte ranges.
/// The tensor entries and the `__metadata__` of a header.
type Header = (HashMap<String, Entry>, BTreeMap<String, String>);

fn parse(bytes: &[u8]) -> std::result::Result<Header, String> {
    let file_len = bytes.len() as u64;
    if is_lfs_pointer(bytes) {
        return Err(format!("not a safetensors file: {LFS_HINT}"));
    }
    if bytes.len() < 8 {
        return Err(format!(
            "file is {file_len} bytes, too short for a safetensors header: incomplete download?"
        ));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER {
        return Err(format!(
            "header length {n} is larger than the 100 MB limit: not a safetensors file, or a corrupted one"
        ));
    }
    if n > file_len - 8 {
        return Err(format!(
            "header length {n} runs past the end of the file ({file_len} bytes): incomplete download?"
        ));
    }
    let header_end = 8 + n as usize;
    let text = std::str::from_utf8(&bytes[8..header_end]).map_err(|e| {
        format!("header is not valid UTF-8 ({e}): not a safetensors file, or a corrupted one")
    })?;
    let top: Pairs<Item> =
        serde_json::from_str(text).map_err(|e| format!("header is not a valid JSON object: {e}"))?;

    let mut seen = HashSet::new();
    let mut entries = HashMap::new();
    let mut metadata = BTreeMap::new();
    for (name, value) in top.0 {
        if !seen.insert(name.clone()) {
            return Err(format!("header has the key {name:?} twice"));
        }
        if name == "__metadata__" {
            metadata = parse_metadata(value)?;
            continue;
        }
        let entry = parse_entry(&name, value, header_end)?;
        entries.insert(name, entry);
    }
    check_layout(&entries, header_end, bytes.len())?;
    Ok((entries, metadata))
}

fn parse_metadata(value: Item) -> std::result::Result<BTreeMap<String, String>, String> {
    let Item::Object(pairs) = value else {
        return Err("`__metadata__` is not a JSON object".into());
    };
    let mut out = BTreeMap::new();
    for (k, v) in pairs.0 {
        let Value::String(s) = v else {
            return Err(format!("`__metadata__` value of {k:?} is {v}, expected a string"));
        };
        if out.insert(k.clone(), s).is_some() {
            return Err(format!("`__metadata__` has the key {k:?} twice"));
        }
    }
    Ok(out)
}

fn parse_entry(name: &str, value: Item, header_end: usize) -> std::result::Result<Entry, String> {
    let Item::Object(pairs) = value else {
        return Err(format!("entry {name:?} is not a JSON object"));
    };
    let mut fields: HashMap<String, Value> = HashMap::new();
    for (k, v) in pairs.0 {
        if fields.insert(k.clone(), v).is_some() {
            return Err(format!("entry {name:?} has the field {k:?} twice"));
        }
    }
    let field = |k: &str| {
        fields
            .get(k)
            .ok_or_else(|| format!("entry {name:?} has no `{k}` field"))
    };
    let dtype_name = field("dtype")?
        .as_str()
        .ok_or_else(|| format!("entry {name:?}: `dtype` is not a string"))?;
    let dtype =
        parse_dtype(dtype_name).ok_or_else(|| format!("entry {name:?}: unknown dtype {dtype_name:?}"))?;
    let ints = |k: &str| -> std::result::Result<Vec<usize>, String> {
        field(k)?
            .as_array()
            .and_then(|a| {
                a.iter()
                    .map(|v| v.as_u64().and_then(|u| usize::try_from(u).ok()))
                    .collect::<Option<Vec<usize>>>()
            })
            .ok_or_else(|| format!("entry {name:?}: `{k}` is not a list of non-negative integers"))
    };
    let shape = ints("shape")?;
    let offsets = ints("data_offsets")?;
    let [begin, end] = offsets[..] else {
        return Err(format!(
            "entry {name:?}: `data_offsets` has {} values, expected [begin, end]",
            offsets.len()
        ));
    };
    if end < begin {
        return Err(format!(
            "entry {name:?}: data_offsets [{begin}, {end}] end before they begin"
        ));
    }
    let nbytes = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|numel| numel.checked_mul(dtype.size()))
        .ok_or_else(|| format!("entry {name:?}: shape {shape:?} is too large"))?;
    if end - begin != nbytes {
        return Err(format!(
            "entry {name:?}: {dtype_name} {shape:?} needs {nbytes} bytes but data_offsets [{begin}, {end}] hold {}",
            end - begin
        ));
    }
    let (start, end) = (header_end.checked_add(begin), header_end.checked_add(end));
    let (Some(start), Some(end)) = (start, end) else {
        return Err(format!("entry {name:?}: data_offsets overflow"));
    };
    Ok(Entry {
        dtype,
        shape,
        start,
        end,
    })
}

/// Offsets must tile the data area exactly: from 0, no gaps, no overlaps, up
/// to the end of the file.
fn check_layout(
    entries: &HashMap<String, Entry>,
    header_end: usize,
    file_len: usize,
) -> std::result::Result<(), String> {
    let mut spans: Vec<(usize, usize, &str)> = entries
        .iter()
        .map(|(n, e)| (e.start, e.end, n.as_str()))
        .collect();
    spans.sort();
    let data_end = spans.iter().map(|s| s.1).max().unwrap_or(header_end);
    if data_end > file_len {
        return Err(format!(
            "file is {file_len} bytes, header says tensors end at {data_end}: incomplete download?"
        ));
    }
    let mut pos = header_end;
    for (start, end, name) in spans {
        if start > pos {
            return Err(format!(
                "gap of {} bytes in the data before tensor {name:?} (offset {})",
                start - pos,
                start - header_end
            ));
        }
        if start < pos {
            return Err(format!(
                "tensor {name:?} (offsets {}..{}) overlaps the previous tensor",
                start - header_end,
                end - header_end
            ));
        }
        pos = end;
    }
    if pos != file_len {
        return Err(format!(
            "file is {file_len} bytes but its tensors end at {pos}: {} trailing bytes (corrupted file?)",
            file_len - pos
        ));
    }
    Ok(())
}

impl TensorSource for SafetensorsFile {
    fn names(&self) -> Vec<String> {
        self.order.clone()
    }

    fn info(&self, name: &str) -> Option<TensorInfo> {
        match self.entries.get(name)? {
            Entry {
                dtype: FileDType::Weight(dtype),
                shape,
                ..
            } => Some(TensorInfo {
                dtype: *dtype,
                shape: shape.clone(),
            }),
            _ => None,
        }
    }

    fn read(&self, name: &str, want: DType) -> Result<CpuData> {
        match self.entries.get(name) {
            Some(Entry {
                dtype: FileDType::Weight(dtype),
                start,
                end,
                ..
            }) => Ok(convert_bytes(&self.bytes[*start..*end], *dtype, want)),
            Some(Entry {
                dtype: FileDType::Other(d, _),
                ..
            }) => Err(Error::bad_file(
                &self.path,
                format!("tensor {name} holds {d} values, not float weights"),
            )),
            None => Err(Error::bad_file(&self.path, format!("no tensor {name}"))),
        }
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}
