//! Named weights: the one interface between checkpoint files and model code.
//!
//! A [`TensorSource`] is a set of named tensors as stored (a safetensors file,
//! a torch pickle, a diffusers folder, a single-file checkpoint viewed through
//! the LDM -> diffusers key map). A [`VarBuilder`] walks it with a name prefix,
//! converts each tensor to the model's dtype and uploads it to the device one
//! at a time (so host memory never holds the whole model).
//!
//! Model constructors call `vb.get(name, shape)` and get a `Tensor` back even
//! when the weight is missing or mis-shaped (a placeholder); every such
//! problem is recorded, and `VarBuilder::finish` reports them all at once,
//! together with the keys nobody asked for. That keeps model code free of `?`
//! and gives users one complete message instead of the first missing key.
//!
//! Shapes are compared with what the source declares before anything is read
//! or allocated, and a placeholder holds no data (see `placeholder`): a
//! config that asks for absurd sizes costs nothing before it is reported. A
//! builder made by `VarBuilder::shapes_only` reads nothing at all, so a
//! checkpoint can be checked against its configs before loading.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use crate::tensor::{CpuData, DType, Storage, Tensor};
use crate::{Device, Error, Result};

/// Element types found in checkpoint files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoredDType {
    F32,
    F16,
    BF16,
}

impl StoredDType {
    pub fn size(self) -> usize {
        match self {
            StoredDType::F32 => 4,
            StoredDType::F16 | StoredDType::BF16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StoredDType::F32 => "f32",
            StoredDType::F16 => "f16",
            StoredDType::BF16 => "bf16",
        }
    }
}

/// What a source knows about one tensor without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: StoredDType,
    pub shape: Vec<usize>,
}

/// Converts little-endian stored bytes to host data of `want`.
pub fn convert_bytes(bytes: &[u8], from: StoredDType, want: DType) -> CpuData {
    use half::{bf16, f16};
    let f32s = |v: Vec<f32>| CpuData::from_f32(v, want);
    match (from, want) {
        (StoredDType::F16, DType::F16) => CpuData::F16(
            bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        (StoredDType::F32, _) => f32s(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        (StoredDType::F16, DType::F32) => f32s(
            bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        (StoredDType::BF16, _) => f32s(
            bytes
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
    }
}

/// A set of named tensors, read on demand.
pub trait TensorSource: Send + Sync {
    /// Every tensor name, in a stable order.
    fn names(&self) -> Vec<String>;
    fn info(&self, name: &str) -> Option<TensorInfo>;
    /// The values of `name` converted to `want` (bf16 goes through f32).
    fn read(&self, name: &str, want: DType) -> Result<CpuData>;
    /// Where the tensors come from, for messages.
    fn describe(&self) -> String;
}

/// Tensors held in memory (tests, converted embeddings, small generated data).
#[derive(Default)]
pub struct MemorySource {
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    order: Vec<String>,
}

impl MemorySource {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: impl Into<String>, shape: &[usize], values: Vec<f32>) {
        let name = name.into();
        assert_eq!(shape.iter().product::<usize>(), values.len(), "{name}");
        if !self.tensors.contains_key(&name) {
            self.order.push(name.clone());
        }
        self.tensors.insert(name, (shape.to_vec(), values));
    }
}

impl TensorSource for MemorySource {
    fn names(&self) -> Vec<String> {
        self.order.clone()
    }

    fn info(&self, name: &str) -> Option<TensorInfo> {
        self.tensors.get(name).map(|(s, _)| TensorInfo {
            dtype: StoredDType::F32,
            shape: s.clone(),
        })
    }

    fn read(&self, name: &str, want: DType) -> Result<CpuData> {
        let (_, v) = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::Weights(format!("no tensor {name} in memory source")))?;
        Ok(CpuData::from_f32(v.clone(), want))
    }

    fn describe(&self) -> String {
        "in-memory tensors".into()
    }
}

#[derive(Default)]
struct Log {
    used: BTreeSet<String>,
    missing: Vec<String>,
    mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
    failed: Vec<String>,
}

/// Makes up the values of a weight from its name and shape.
type Init = dyn Fn(&str, &[usize]) -> Vec<f32> + Send + Sync;

/// Where the values of the weights come from.
enum Values {
    /// Read from the source.
    Read,
    /// None: names and shapes are only compared ([`VarBuilder::shapes_only`]).
    ShapesOnly,
    /// Made up by [`VarBuilder::from_fn`], none read.
    Generated(Box<Init>),
}

struct Inner {
    source: Arc<dyn TensorSource>,
    values: Values,
    device: Device,
    dtype: DType,
    log: Mutex<Log>,
}

/// Prefix-scoped access to a [`TensorSource`] for model constructors.
#[derive(Clone)]
pub struct VarBuilder {
    inner: Arc<Inner>,
    prefix: String,
}

impl VarBuilder {
    /// Weights from `source`, stored as `dtype` on `device`.
    pub fn new(source: Arc<dyn TensorSource>, device: &Device, dtype: DType) -> VarBuilder {
        VarBuilder {
            inner: Arc::new(Inner {
                source,
                values: Values::Read,
                device: device.clone(),
                dtype,
                log: Mutex::new(Log::default()),
            }),
            prefix: String::new(),
        }
    }

    /// Weights made up on request: `init(name, shape)` gives the values of
    /// each weight the model asks for (benchmarks of the full architecture
    /// without a download). `finish` reports only weights that could not be
    /// placed on the device.
    pub fn from_fn(
        init: impl Fn(&str, &[usize]) -> Vec<f32> + Send + Sync + 'static,
        device: &Device,
        dtype: DType,
    ) -> VarBuilder {
        VarBuilder {
            inner: Arc::new(Inner {
                source: Arc::new(MemorySource::new()),
                values: Values::Generated(Box::new(init)),
                device: device.clone(),
                dtype,
                log: Mutex::new(Log::default()),
            }),
            prefix: String::new(),
        }
    }

    /// Compares the names and shapes a model asks for with those `source`
    /// declares, reading no tensor data: every tensor it returns is a
    /// `placeholder`, so the model built from it must be dropped once
    /// `finish` has reported (the models' `check` functions do this).
    pub(crate) fn shapes_only(source: Arc<dyn TensorSource>) -> VarBuilder {
        VarBuilder {
            inner: Arc::new(Inner {
                source,
                values: Values::ShapesOnly,
                device: Device::Cpu,
                dtype: DType::F32,
                log: Mutex::new(Log::default()),
            }),
            prefix: String::new(),
        }
    }

    /// A builder for the sub-module `name` (`"down_blocks.0"`...).
    pub fn pp(&self, name: impl std::fmt::Display) -> VarBuilder {
        VarBuilder {
            inner: self.inner.clone(),
            prefix: self.path(&name.to_string()),
        }
    }

    pub fn device(&self) -> &Device {
        &self.inner.device
    }

    pub fn dtype(&self) -> DType {
        self.inner.dtype
    }

    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// True when the source has `name` under this prefix.
    pub fn contains(&self, name: &str) -> bool {
        self.inner.source.info(&self.path(name)).is_some()
    }

    /// The weight `name` with the expected `shape`, in the builder's dtype.
    pub fn get(&self, name: &str, shape: &[usize]) -> Tensor {
        self.get_as(name, shape, self.inner.dtype)
    }

    /// The weight `name` with the expected `shape`, stored as `dtype`.
    pub fn get_as(&self, name: &str, shape: &[usize], dtype: DType) -> Tensor {
        let full = self.path(name);
        let source = &self.inner.source;
        let read = match &self.inner.values {
            Values::Generated(init) => Tensor::from_f32(init(&full, shape), shape, dtype, &self.inner.device),
            Values::Read | Values::ShapesOnly => {
                let mut log = self.inner.log.lock().unwrap_or_else(|e| e.into_inner());
                log.used.insert(full.clone());
                let Some(info) = source.info(&full) else {
                    log.missing.push(full);
                    return placeholder(shape, dtype);
                };
                if info.shape != shape {
                    log.mismatched.push((full, shape.to_vec(), info.shape));
                    return placeholder(shape, dtype);
                }
                if matches!(self.inner.values, Values::ShapesOnly) {
                    return placeholder(shape, dtype);
                }
                drop(log);
                source
                    .read(&full, dtype)
                    .and_then(|data| Tensor::from_cpu_data(data, shape, &self.inner.device))
            }
        };
        read.unwrap_or_else(|e| {
            let mut log = self.inner.log.lock().unwrap_or_else(|e| e.into_inner());
            log.failed.push(format!("{full}: {e}"));
            placeholder(shape, dtype)
        })
    }

    /// Reports every missing, mis-shaped or unreadable weight, and every key
    /// under `root` that was never asked for (except names ending with one of
    /// `ignore`, such as `position_ids`). `what` names the model in messages.
    pub fn finish(&self, what: &str, ignore: &[&str]) -> Result<()> {
        let log = self.inner.log.lock().unwrap_or_else(|e| e.into_inner());
        let root = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}.", self.prefix)
        };
        let unexpected: Vec<String> = self
            .inner
            .source
            .names()
            .into_iter()
            .filter(|n| n.starts_with(&root) && !log.used.contains(n))
            .filter(|n| !ignore.iter().any(|s| n.ends_with(s)))
            .collect();
        if log.missing.is_empty()
            && log.mismatched.is_empty()
            && log.failed.is_empty()
            && unexpected.is_empty()
        {
            return Ok(());
        }
        let list = |v: &[String]| {
            let mut s = v.iter().take(20).cloned().collect::<Vec<_>>().join(", ");
            if v.len() > 20 {
                s.push_str(&format!(", ... ({} in all)", v.len()));
            }
            s
        };
        let mut msg = format!(
            "{what} weights from {} do not match the model:",
            self.inner.source.describe()
        );
        if !log.missing.is_empty() {
            msg.push_str(&format!(
                "\n  missing ({}): {}",
                log.missing.len(),
                list(&log.missing)
            ));
        }
        if !log.mismatched.is_empty() {
            let v: Vec<String> = log
                .mismatched
                .iter()
                .map(|(n, want, got)| format!("{n} expected {want:?} found {got:?}"))
                .collect();
            msg.push_str(&format!("\n  wrong shape ({}): {}", v.len(), list(&v)));
        }
        if !log.failed.is_empty() {
            msg.push_str(&format!(
                "\n  unreadable ({}): {}",
                log.failed.len(),
                list(&log.failed)
            ));
        }
        if !unexpected.is_empty() {
            msg.push_str(&format!(
                "\n  unexpected ({}): {}",
                unexpected.len(),
                list(&unexpected)
            ));
        }
        Err(Error::Weights(msg))
    }
}

/// What a builder returns for a weight it could not (or was not asked to)
/// load: the expected shape over no data. The model it goes into is never
/// run, since `finish` reports the problem (or, for `shapes_only`, the model
/// is dropped), so it needs no memory whatever size a config asked for; a
/// zero tensor of that size was what let a crafted config abort the process.
fn placeholder(shape: &[usize], dtype: DType) -> Tensor {
    let empty = CpuData::from_f32(Vec::new(), dtype);
    Tensor::from_storage(Storage::Cpu(Arc::new(empty)), shape, dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_all_problems_at_once() {
        let mut src = MemorySource::new();
        src.insert("a.weight", &[2, 3], vec![1.0; 6]);
        src.insert("a.bias", &[3], vec![0.0; 3]);
        src.insert("a.extra", &[1], vec![0.0]);
        src.insert("a.position_ids", &[1], vec![0.0]);
        let vb = VarBuilder::new(Arc::new(src), &Device::Cpu, DType::F32).pp("a");
        let w = vb.get("weight", &[2, 3]);
        assert_eq!(w.to_vec_f32().unwrap(), vec![1.0; 6]);
        let _ = vb.get("bias", &[2]);
        let _ = vb.get("gone", &[4]);
        let e = vb
            .finish("test model", &["position_ids"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing (1): a.gone"), "{e}");
        assert!(e.contains("a.bias expected [2] found [3]"), "{e}");
        assert!(e.contains("unexpected (1): a.extra"), "{e}");
    }

    #[test]
    fn placeholders_hold_no_data() {
        // 2^40 elements: a zero placeholder of this size would abort.
        let huge = [1 << 20, 1 << 20];
        let mut src = MemorySource::new();
        src.insert("w", &[2], vec![1.0; 2]);
        let vb = VarBuilder::new(Arc::new(src), &Device::Cpu, DType::F32);
        assert_eq!(vb.get("w", &huge).shape(), huge);
        assert_eq!(vb.get("gone", &huge).elem_count(), 1 << 40);
        let e = vb.finish("test model", &[]).unwrap_err().to_string();
        assert!(e.contains("w expected [1048576, 1048576] found [2]"), "{e}");
        assert!(e.contains("missing (1): gone"), "{e}");
    }

    #[test]
    fn shapes_only_compares_without_reading() {
        let mut src = MemorySource::new();
        src.insert("a", &[2, 3], vec![1.0; 6]);
        let vb = VarBuilder::shapes_only(Arc::new(src));
        let a = vb.get("a", &[2, 3]);
        assert!(
            matches!(a.storage(), Storage::Cpu(d) if d.is_empty()),
            "nothing read"
        );
        vb.finish("test model", &[]).unwrap();
        let _ = vb.get("a", &[3, 2]);
        let e = vb.finish("test model", &[]).unwrap_err().to_string();
        assert!(e.contains("a expected [3, 2] found [2, 3]"), "{e}");
    }

    #[test]
    fn generated_weights() {
        let vb = VarBuilder::from_fn(
            |name, shape| vec![name.len() as f32; shape.iter().product()],
            &Device::Cpu,
            DType::F32,
        );
        let w = vb.pp("layer").get("weight", &[2, 2]);
        assert_eq!(w.to_vec_f32().unwrap(), vec![12.0; 4]);
        vb.finish("generated", &[]).unwrap();
    }

    #[test]
    fn converts_stored_types() {
        let b = half::bf16::from_f32(1.5).to_le_bytes();
        assert_eq!(convert_bytes(&b, StoredDType::BF16, DType::F32).to_f32()[0], 1.5);
        let h = half::f16::from_f32(-2.0).to_le_bytes();
        assert!(matches!(
            convert_bytes(&h, StoredDType::F16, DType::F16),
            CpuData::F16(_)
        ));
        let f = 0.1f32.to_le_bytes();
        assert_eq!(
            convert_bytes(&f, StoredDType::F32, DType::F16).to_f32()[0],
            half::f16::from_f32(0.1).to_f32()
        );
    }
}
