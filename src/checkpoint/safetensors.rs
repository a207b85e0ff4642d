//! Memory-mapped safetensors files as a `TensorSource`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::tensor::{CpuData, DType};
use crate::weights::{convert_bytes, StoredDType, TensorInfo, TensorSource};
use crate::{Error, Result};

struct Entry {
    info: TensorInfo,
    /// Byte range inside the mapped file.
    start: usize,
    end: usize,
}

pub struct SafetensorsFile {
    path: PathBuf,
    mmap: Mmap,
    entries: HashMap<String, Entry>,
    order: Vec<String>,
}

impl SafetensorsFile {
    pub fn open(path: impl AsRef<Path>) -> Result<SafetensorsFile> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::File::open(&path).map_err(|e| Error::io(path.display().to_string(), e))?;
        // SAFETY: the map is read-only; a file truncated underneath us is the
        // usual mmap caveat, accepted by every checkpoint loader.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path.display().to_string(), e))?;
        let st = safetensors::SafeTensors::deserialize(&mmap)
            .map_err(|e| Error::bad_file(&path, format!("not a valid safetensors file: {e}")))?;
        let base = mmap.as_ptr() as usize;
        let mut entries = HashMap::new();
        let mut order = Vec::new();
        for (name, view) in st.tensors() {
            let dtype = match view.dtype() {
                safetensors::Dtype::F32 => StoredDType::F32,
                safetensors::Dtype::F16 => StoredDType::F16,
                safetensors::Dtype::BF16 => StoredDType::BF16,
                other => {
                    // Integer tensors (e.g. position_ids) are not weights.
                    let _ = other;
                    continue;
                }
            };
            let start = view.data().as_ptr() as usize - base;
            entries.insert(
                name.clone(),
                Entry {
                    info: TensorInfo {
                        dtype,
                        shape: view.shape().to_vec(),
                    },
                    start,
                    end: start + view.data().len(),
                },
            );
            order.push(name);
        }
        order.sort();
        Ok(SafetensorsFile {
            path,
            mmap,
            entries,
            order,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl TensorSource for SafetensorsFile {
    fn names(&self) -> Vec<String> {
        self.order.clone()
    }

    fn info(&self, name: &str) -> Option<TensorInfo> {
        self.entries.get(name).map(|e| e.info.clone())
    }

    fn read(&self, name: &str, want: DType) -> Result<CpuData> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| Error::bad_file(&self.path, format!("no tensor {name}")))?;
        Ok(convert_bytes(&self.mmap[e.start..e.end], e.info.dtype, want))
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}
