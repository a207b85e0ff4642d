//! Tensor sources built on others: a renamed view (the LDM key map, the
//! text encoder's `text_model.` prefix, 1x1 convolutions seen as linears),
//! the shards of a sharded safetensors folder, and opening a weights file of
//! either format by its content.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::bytes::{sniff, FileBytes, Format};
use super::{SafetensorsFile, TorchFile, TorchSource};
use crate::tensor::{CpuData, DType};
use crate::weights::{TensorInfo, TensorSource};
use crate::{Error, Result};

/// Opens a weights file as safetensors or torch zip, by its first bytes (the
/// extension is not trusted: `.bin` and `.ckpt` are both torch, `.pt` may be
/// either).
pub fn open_weights(path: &Path) -> Result<Arc<dyn TensorSource>> {
    let bytes = FileBytes::map(path)?;
    if sniff(&bytes) != Format::Safetensors {
        let file = TorchFile::from_bytes(path.to_path_buf(), bytes)?;
        Ok(Arc::new(TorchSource::new(Arc::new(file))?))
    } else {
        Ok(Arc::new(SafetensorsFile::from_bytes(path.to_path_buf(), bytes)?))
    }
}

/// One tensor of a [`Renamed`] source: its name in the base and, for 1x1
/// convolutions read as linears, the shape to present.
#[derive(Debug, Clone)]
pub struct Target {
    pub stored: String,
    pub shape: Option<Vec<usize>>,
}

/// A view of `base` under other names. Squeezing `[C, C, 1, 1]` to `[C, C]`
/// changes no byte, so reads pass straight through.
pub struct Renamed {
    base: Arc<dyn TensorSource>,
    map: BTreeMap<String, Target>,
    what: String,
}

impl Renamed {
    /// `what` says which part of the base this is (`"UNet of v1-5.safetensors"`).
    pub fn new(base: Arc<dyn TensorSource>, map: BTreeMap<String, Target>, what: String) -> Renamed {
        Renamed { base, map, what }
    }
}

impl TensorSource for Renamed {
    fn names(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    fn info(&self, name: &str) -> Option<TensorInfo> {
        let t = self.map.get(name)?;
        let mut info = self.base.info(&t.stored)?;
        if let Some(s) = &t.shape {
            info.shape = s.clone();
        }
        Some(info)
    }

    fn read(&self, name: &str, want: DType) -> Result<CpuData> {
        let t = self
            .map
            .get(name)
            .ok_or_else(|| Error::Weights(format!("no tensor {name} in {}", self.what)))?;
        self.base.read(&t.stored, want)
    }

    fn describe(&self) -> String {
        self.what.clone()
    }
}

/// The shards of `<stem>.safetensors.index.json` (`{"weight_map": {name: file}}`).
pub struct Sharded {
    shards: Vec<SafetensorsFile>,
    /// Tensor name -> index in `shards`.
    map: BTreeMap<String, usize>,
    index: PathBuf,
}

impl Sharded {
    pub fn open(index: &Path) -> Result<Sharded> {
        let bad = |m: String| Error::bad_file(index, m);
        let text = std::fs::read_to_string(index).map_err(|e| Error::io(index.display().to_string(), e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let weight_map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad("no `weight_map` object".into()))?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut files: HashMap<String, usize> = HashMap::new();
        let mut shards = Vec::new();
        let mut map = BTreeMap::new();
        for (name, file) in weight_map {
            let file = file
                .as_str()
                .filter(|f| !f.contains('/') && !f.contains('\\') && !f.starts_with('.'))
                .ok_or_else(|| {
                    bad(format!(
                        "weight_map entry {name:?} is not a file name in this folder"
                    ))
                })?;
            let i = match files.get(file) {
                Some(&i) => i,
                None => {
                    shards.push(SafetensorsFile::open(dir.join(file))?);
                    files.insert(file.to_string(), shards.len() - 1);
                    shards.len() - 1
                }
            };
            if shards[i].info(name).is_none() && !shards[i].other_tensors().iter().any(|(n, _)| n == name) {
                return Err(bad(format!(
                    "weight_map puts {name:?} in {file}, which does not hold it"
                )));
            }
            map.insert(name.clone(), i);
        }
        for shard in &shards {
            if let Some(extra) = shard.names().into_iter().find(|n| !map.contains_key(n)) {
                return Err(bad(format!(
                    "{} holds {extra:?}, which the weight_map does not list",
                    shard.path().display()
                )));
            }
        }
        map.retain(|name, i| shards[*i].info(name).is_some());
        Ok(Sharded {
            shards,
            map,
            index: index.to_path_buf(),
        })
    }
}

impl TensorSource for Sharded {
    fn names(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    fn info(&self, name: &str) -> Option<TensorInfo> {
        self.shards[*self.map.get(name)?].info(name)
    }

    fn read(&self, name: &str, want: DType) -> Result<CpuData> {
        let i = self
            .map
            .get(name)
            .ok_or_else(|| Error::bad_file(&self.index, format!("no tensor {name}")))?;
        self.shards[*i].read(name, want)
    }

    fn describe(&self) -> String {
        format!("{} ({} shards)", self.index.display(), self.shards.len())
    }
}

/// Parameters per stored dtype, for summaries.
pub fn dtype_counts(source: &dyn TensorSource) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for name in source.names() {
        if let Some(info) = source.info(&name) {
            *out.entry(info.dtype.name()).or_insert(0) += info.shape.iter().product::<usize>();
        }
    }
    out
}
