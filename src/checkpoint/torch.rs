//! PyTorch checkpoints (`.ckpt`, `.bin`, `.pt`) in the zip format of
//! `torch.save` since 1.6: `<archive>/data.pkl` (the object tree, read by the
//! non-executing [`pickle`](super::pickle) reader) and one entry
//! `<archive>/data/<key>` per storage, stored or deflated.
//!
//! Every tensor is checked once at open: its storage entry exists, the
//! storage's recorded size fits the entry, and the view (offset, size,
//! stride) stays inside the storage. Non-contiguous tensors (a saved
//! transpose) are gathered into row-major order when read.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use zip::{CompressionMethod, ZipArchive};

use super::bytes::{is_lfs_pointer, sniff, FileBytes, Format, LFS_HINT, RAW_PICKLE_HINT};
use super::pickle::{self, Elem, Id, Node, Pickle, TensorRef};
use crate::tensor::{CpuData, DType};
use crate::weights::{convert_bytes, StoredDType, TensorInfo, TensorSource};
use crate::{Error, Result};

/// `data.pkl` of an SD checkpoint is well under 1 MB (a training checkpoint
/// with optimizer state a few MB): 64 MB is far beyond any real file and bounds
/// what a hostile archive can make us inflate and parse.
const MAX_PICKLE: u64 = 64 << 20;

/// Deflate cannot compress better than about 1032:1, so an entry that claims to
/// inflate to more than this many times its compressed size (plus a little for
/// tiny entries) lies about its size: refused before anything is inflated.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// Shared bytes readable through a `Cursor` by the zip reader.
#[derive(Clone)]
struct Shared(Arc<FileBytes>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Where a storage's bytes are.
enum Entry {
    /// Uncompressed: a range of the file.
    Stored(std::ops::Range<usize>),
    /// Deflated: inflated on demand from zip entry `index` of `size` bytes.
    Deflated { index: usize, size: usize },
}

impl Entry {
    fn size(&self) -> usize {
        match self {
            Entry::Stored(r) => r.len(),
            Entry::Deflated { size, .. } => *size,
        }
    }
}

/// A torch zip checkpoint: its object tree and its storages.
pub struct TorchFile {
    path: PathBuf,
    bytes: Shared,
    zip: Mutex<ZipArchive<Cursor<Shared>>>,
    storages: HashMap<String, Entry>,
    pickle: Pickle,
}

impl TorchFile {
    pub fn open(path: impl AsRef<Path>) -> Result<TorchFile> {
        let path = path.as_ref().to_path_buf();
        let bytes = FileBytes::map(&path)?;
        Self::from_bytes(path, bytes)
    }

    /// Reads `bytes` as a torch zip checkpoint; `path` names it in messages.
    pub fn from_bytes(path: PathBuf, bytes: FileBytes) -> Result<TorchFile> {
        let bad = |m: String| Error::bad_file(&path, m);
        if is_lfs_pointer(&bytes) {
            return Err(bad(format!("not a torch checkpoint: {LFS_HINT}")));
        }
        match sniff(&bytes) {
            Format::TorchZip => {}
            Format::LegacyTorch => {
                return Err(bad(
                    "legacy (pre-1.6, non-zip) torch format is not supported: re-save it with \
                     torch >= 1.6 (`torch.save(torch.load(f), f)`) or convert it to safetensors"
                        .into(),
                ))
            }
            Format::RawPickle => return Err(bad(RAW_PICKLE_HINT.into())),
            Format::Safetensors => {
                return Err(bad(format!(
                    "not a torch zip checkpoint (starts with {:02x?})",
                    &bytes[..bytes.len().min(4)]
                )))
            }
        }
        let bytes = Shared(Arc::new(bytes));
        let mut zip = ZipArchive::new(Cursor::new(bytes.clone()))
            .map_err(|e| bad(format!("damaged zip archive ({e}): incomplete download?")))?;
        let (prefix, pkl_index) = find_pickle(&mut zip).map_err(&bad)?;
        let data = read_entry(&mut zip, pkl_index, MAX_PICKLE).map_err(&bad)?;
        check_byteorder(&mut zip, &prefix).map_err(&bad)?;
        let pickle = pickle::parse(&data).map_err(|e| bad(format!("cannot read data.pkl: {e}")))?;
        let storages = index_storages(&mut zip, &prefix, bytes.0.len()).map_err(&bad)?;
        let file = TorchFile {
            path,
            bytes,
            zip: Mutex::new(zip),
            storages,
            pickle,
        };
        file.check_tensors()?;
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The object tree of `data.pkl`.
    pub fn pickle(&self) -> &Pickle {
        &self.pickle
    }

    /// Every tensor's storage exists and is large enough for the view.
    fn check_tensors(&self) -> Result<()> {
        for node in &self.pickle.nodes {
            let Node::Tensor(t) = node else { continue };
            let entry = self.storages.get(&t.storage.key).ok_or_else(|| {
                Error::bad_file(
                    &self.path,
                    format!(
                        "tensor storage {} has no data entry in the archive",
                        t.storage.key
                    ),
                )
            })?;
            let need = t.storage.numel.checked_mul(t.storage.elem.size());
            if need.is_none_or(|n| n > entry.size()) {
                return Err(Error::bad_file(
                    &self.path,
                    format!(
                        "storage {} of {} {} elements needs more than the {} bytes of its zip entry",
                        t.storage.key,
                        t.storage.numel,
                        t.storage.elem.name(),
                        entry.size()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The bytes of storage `key`.
    fn storage_bytes(&self, key: &str) -> Result<Cow<'_, [u8]>> {
        let entry = self
            .storages
            .get(key)
            .ok_or_else(|| Error::bad_file(&self.path, format!("no storage {key}")))?;
        match entry {
            Entry::Stored(r) => Ok(Cow::Borrowed(&self.bytes.0[r.clone()])),
            Entry::Deflated { index, size } => {
                let mut zip = self.zip.lock().unwrap_or_else(|e| e.into_inner());
                let data =
                    read_entry(&mut zip, *index, *size as u64).map_err(|m| Error::bad_file(&self.path, m))?;
                if data.len() != *size {
                    return Err(Error::bad_file(
                        &self.path,
                        format!("storage {key} inflates to {} bytes, expected {size}", data.len()),
                    ));
                }
                Ok(Cow::Owned(data))
            }
        }
    }

    /// The elements of `t` in row-major order, as little-endian bytes.
    pub fn tensor_bytes(&self, t: &TensorRef) -> Result<Vec<u8>> {
        if t.numel() == 0 {
            // An empty view's offset is not bounds-checked (nothing is read).
            return Ok(Vec::new());
        }
        let data = self.storage_bytes(&t.storage.key)?;
        let es = t.storage.elem.size();
        if t.is_contiguous() {
            // In bounds: checked against the storage at parse time and the
            // storage against the entry at open.
            let start = t.offset * es;
            return Ok(data[start..start + t.numel() * es].to_vec());
        }
        let mut out = Vec::with_capacity(t.numel() * es);
        let mut index = vec![0usize; t.shape.len()];
        for _ in 0..t.numel() {
            let e = t.offset + index.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            out.extend_from_slice(&data[e * es..(e + 1) * es]);
            // Odometer increment, last dimension fastest.
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < t.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        Ok(out)
    }

    /// The values of a float tensor as f32.
    pub fn tensor_f32(&self, t: &TensorRef) -> Result<Vec<f32>> {
        let dtype = weight_dtype(t.storage.elem).ok_or_else(|| {
            Error::bad_file(
                &self.path,
                format!("tensor holds {} values, not float weights", t.storage.elem.name()),
            )
        })?;
        let b = self.tensor_bytes(t)?;
        Ok(convert_bytes(&b, dtype, DType::F32).to_f32().into_owned())
    }

    /// The tensors of the state dict: the `state_dict` entry of the root dict
    /// when there is one (Lightning checkpoints), else the root dict itself.
    pub fn state_dict(&self) -> Result<BTreeMap<String, TensorRef>> {
        let p = &self.pickle;
        let root = p.get(p.root, "state_dict").unwrap_or(p.root);
        self.tensors_of(root)
    }

    /// The string-keyed tensors of the dict `dict` (other values are skipped).
    pub fn tensors_of(&self, dict: Id) -> Result<BTreeMap<String, TensorRef>> {
        let p = &self.pickle;
        let items = p.dict_items(dict).ok_or_else(|| {
            Error::bad_file(
                &self.path,
                format!("expected a dict of tensors, found {}", p.kind(dict)),
            )
        })?;
        Ok(items
            .iter()
            .filter_map(|&(k, v)| match (p.str(k), p.node(v)) {
                (Some(k), Node::Tensor(t)) => Some((k.to_string(), t.clone())),
                _ => None,
            })
            .collect())
    }
}

/// The dtypes that are weights.
pub fn weight_dtype(e: Elem) -> Option<StoredDType> {
    match e {
        Elem::F32 => Some(StoredDType::F32),
        Elem::F16 => Some(StoredDType::F16),
        Elem::BF16 => Some(StoredDType::BF16),
        _ => None,
    }
}

/// The archive's `<prefix>/data.pkl`: exactly one, one directory deep.
fn find_pickle(zip: &mut ZipArchive<Cursor<Shared>>) -> std::result::Result<(String, usize), String> {
    let mut found = Vec::new();
    for (i, name) in zip.file_names().enumerate() {
        let name = name.map_err(|e| format!("damaged zip entry name: {e}"))?;
        if let Some(prefix) = name.strip_suffix("/data.pkl") {
            if !prefix.contains('/') {
                found.push((prefix.to_string(), i));
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err("zip archive without data.pkl: not a torch checkpoint".into()),
        n => Err(format!(
            "zip archive with {n} data.pkl entries: not a torch checkpoint"
        )),
    }
}

/// Reads zip entry `index` whole, refusing one that inflates beyond `max` bytes.
fn read_entry(
    zip: &mut ZipArchive<Cursor<Shared>>,
    index: usize,
    max: u64,
) -> std::result::Result<Vec<u8>, String> {
    let f = zip
        .by_index(index)
        .map_err(|e| format!("damaged zip entry {index}: {e}"))?;
    let name = f.name().map(|n| n.to_string()).unwrap_or_default();
    // The declared size first, so an oversized entry is refused before inflating; the
    // `take` below still bounds an entry whose declared size lies.
    if f.size() > max {
        return Err(format!(
            "zip entry {name} is {} bytes, more than the {max} bytes expected",
            f.size()
        ));
    }
    let mut out = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("cannot read zip entry {name}: {e}"))?;
    if out.len() as u64 > max {
        return Err(format!("zip entry {name} is larger than {max} bytes"));
    }
    Ok(out)
}

/// Newer archives record the byte order of the storages; only little-endian
/// data is read.
fn check_byteorder(zip: &mut ZipArchive<Cursor<Shared>>, prefix: &str) -> std::result::Result<(), String> {
    let Some(i) = zip.index_for_name(&format!("{prefix}/byteorder")) else {
        return Ok(());
    };
    let order = read_entry(zip, i, 16)?;
    match order.as_slice() {
        b"little" => Ok(()),
        other => Err(format!(
            "storages are {:?}-endian; only little-endian checkpoints are supported",
            String::from_utf8_lossy(other)
        )),
    }
}

/// Locates every `<prefix>/data/<key>` entry.
fn index_storages(
    zip: &mut ZipArchive<Cursor<Shared>>,
    prefix: &str,
    file_len: usize,
) -> std::result::Result<HashMap<String, Entry>, String> {
    let dir = format!("{prefix}/data/");
    let mut out = HashMap::new();
    for i in 0..zip.len() {
        let f = zip
            .by_index_raw(i)
            .map_err(|e| format!("damaged zip entry {i}: {e}"))?;
        let Some(key) = f
            .name()
            .ok()
            .and_then(|n| n.strip_prefix(&dir).map(str::to_string))
        else {
            continue;
        };
        let size = usize::try_from(f.size()).map_err(|_| format!("zip entry {key} too large"))?;
        let entry = match f.compression() {
            CompressionMethod::Stored => {
                let start = f
                    .data_start()
                    .and_then(|s| usize::try_from(s).ok())
                    .ok_or_else(|| format!("zip entry {dir}{key} has no data offset"))?;
                let end = start
                    .checked_add(size)
                    .filter(|&e| e <= file_len && f.compressed_size() == f.size())
                    .ok_or_else(|| {
                        format!(
                            "zip entry {dir}{key} ({size} bytes at {start}) runs past the end of the \
                             file ({file_len} bytes): incomplete download?"
                        )
                    })?;
                Entry::Stored(start..end)
            }
            CompressionMethod::Deflated => {
                if f.size() > f.compressed_size().saturating_mul(MAX_DEFLATE_RATIO) + 1024 {
                    return Err(format!(
                        "zip entry {dir}{key} claims to inflate from {} to {size} bytes, more than \
                         deflate can compress: a damaged or hostile archive",
                        f.compressed_size()
                    ));
                }
                Entry::Deflated { index: i, size }
            }
            other => return Err(format!("zip entry {dir}{key} uses compression {other:?}")),
        };
        out.insert(key, entry);
    }
    Ok(out)
}

/// The float tensors of a state dict as a `TensorSource`. Tensors of other
/// dtypes (i64 `position_ids`, token ids) are not listed.
pub struct TorchSource {
    file: Arc<TorchFile>,
    tensors: BTreeMap<String, (StoredDType, TensorRef)>,
}

impl TorchSource {
    /// The state dict of `file` (see [`TorchFile::state_dict`]).
    pub fn new(file: Arc<TorchFile>) -> Result<TorchSource> {
        let tensors = file
            .state_dict()?
            .into_iter()
            .filter_map(|(k, t)| weight_dtype(t.storage.elem).map(|d| (k, (d, t))))
            .collect();
        Ok(TorchSource { file, tensors })
    }

    pub fn open(path: impl AsRef<Path>) -> Result<TorchSource> {
        Self::new(Arc::new(TorchFile::open(path)?))
    }
}

impl TensorSource for TorchSource {
    fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    fn info(&self, name: &str) -> Option<TensorInfo> {
        self.tensors.get(name).map(|(d, t)| TensorInfo {
            dtype: *d,
            shape: t.shape.clone(),
        })
    }

    fn read(&self, name: &str, want: DType) -> Result<CpuData> {
        let (d, t) = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::bad_file(&self.file.path, format!("no tensor {name}")))?;
        Ok(convert_bytes(&self.file.tensor_bytes(t)?, *d, want))
    }

    fn describe(&self) -> String {
        self.file.path.display().to_string()
    }
}
