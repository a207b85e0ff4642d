//! The tensor: a shape, an element type and storage on one device.
//!
//! Tensors are immutable values: every op returns a new tensor, so a clone is
//! cheap (storage is shared) and there is no aliasing to reason about. All
//! tensors are contiguous and row-major; a permutation is an explicit op
//! (`Tensor::permute`) that copies. Reshape only changes the shape.
//!
//! GPU tensors are lazy: ops are recorded and run when a result is read back
//! (or the context is flushed). GPU errors therefore surface at read-back time.

mod dtype;

pub use dtype::DType;

use std::sync::Arc;

use half::f16;

use crate::device::Device;
use crate::gpu::{GpuBuffer, GpuContext};
use crate::{Error, Result};

/// Host-side element data.
#[derive(Debug)]
pub enum CpuData {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl CpuData {
    pub fn len(&self) -> usize {
        match self {
            CpuData::F32(v) => v.len(),
            CpuData::F16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DType {
        match self {
            CpuData::F32(_) => DType::F32,
            CpuData::F16(_) => DType::F16,
        }
    }

    /// Widens to f32 (a copy for f16, a borrow for f32).
    pub fn to_f32(&self) -> std::borrow::Cow<'_, [f32]> {
        match self {
            CpuData::F32(v) => std::borrow::Cow::Borrowed(v),
            CpuData::F16(v) => std::borrow::Cow::Owned(v.iter().map(|x| x.to_f32()).collect()),
        }
    }

    /// Stores f32 values in `dtype` (rounding to nearest for f16).
    pub fn from_f32(values: Vec<f32>, dtype: DType) -> CpuData {
        match dtype {
            DType::F32 => CpuData::F32(values),
            DType::F16 => CpuData::F16(values.iter().map(|&x| f16::from_f32(x)).collect()),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            CpuData::F32(v) => bytemuck::cast_slice(v),
            CpuData::F16(v) => bytemuck::cast_slice(v),
        }
    }
}

impl Drop for CpuData {
    /// f32 buffers go back to the CPU backend's pool (`cpu::pool`), so the
    /// next op's output reuses the pages instead of faulting in new ones.
    fn drop(&mut self) {
        if let CpuData::F32(v) = self {
            crate::cpu::pool::recycle(std::mem::take(v));
        }
    }
}

#[derive(Clone, Debug)]
pub enum Storage {
    Cpu(Arc<CpuData>),
    Gpu(Arc<GpuBuffer>),
}

#[derive(Clone, Debug)]
pub struct Tensor {
    shape: Vec<usize>,
    dtype: DType,
    storage: Storage,
}

impl Tensor {
    // ----- construction -------------------------------------------------

    /// A tensor from host data already in its final dtype.
    pub fn from_cpu_data(data: CpuData, shape: &[usize], device: &Device) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if data.len() != n {
            return Err(Error::Shape {
                what: "tensor data".into(),
                expected: shape.to_vec(),
                found: vec![data.len()],
            });
        }
        let dtype = data.dtype();
        let storage = match device {
            Device::Cpu => Storage::Cpu(Arc::new(data)),
            Device::Gpu(ctx) => Storage::Gpu(Arc::new(ctx.upload(data.as_bytes())?)),
        };
        Ok(Tensor {
            shape: shape.to_vec(),
            dtype,
            storage,
        })
    }

    /// A tensor of `dtype` from f32 values (rounded when `dtype` is f16).
    pub fn from_f32(values: Vec<f32>, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::from_cpu_data(CpuData::from_f32(values, dtype), shape, device)
    }

    /// An f32 tensor from f32 values.
    pub fn from_vec(values: Vec<f32>, shape: &[usize], device: &Device) -> Result<Tensor> {
        Tensor::from_f32(values, shape, DType::F32, device)
    }

    pub fn zeros(shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        let n = shape.iter().product();
        Tensor::from_f32(vec![0.0; n], shape, dtype, device)
    }

    /// Wraps existing storage (used by the backends to build op outputs).
    pub(crate) fn from_storage(storage: Storage, shape: &[usize], dtype: DType) -> Tensor {
        Tensor {
            shape: shape.to_vec(),
            dtype,
            storage,
        }
    }

    /// A CPU tensor from f32 values computed by a CPU twin, rounded to `dtype`.
    pub(crate) fn cpu_from_f32(values: Vec<f32>, shape: &[usize], dtype: DType) -> Tensor {
        debug_assert_eq!(values.len(), shape.iter().product::<usize>());
        Tensor::from_storage(
            Storage::Cpu(Arc::new(CpuData::from_f32(values, dtype))),
            shape,
            dtype,
        )
    }

    // ----- metadata -----------------------------------------------------

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Size of dimension `d`; negative counts from the end.
    pub fn dim(&self, d: isize) -> usize {
        let r = self.rank() as isize;
        let i = if d < 0 { r + d } else { d };
        assert!(
            (0..r).contains(&i),
            "dim {d} out of range for shape {:?}",
            self.shape
        );
        self.shape[i as usize]
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn size_in_bytes(&self) -> usize {
        self.elem_count() * self.dtype.size()
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn device(&self) -> Device {
        match &self.storage {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Gpu(b) => Device::Gpu(b.context()),
        }
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self.storage, Storage::Gpu(_))
    }

    /// The GPU context of a GPU tensor.
    pub(crate) fn gpu_context(&self) -> Option<Arc<GpuContext>> {
        match &self.storage {
            Storage::Gpu(b) => Some(b.context()),
            Storage::Cpu(_) => None,
        }
    }

    /// Host data of a CPU tensor. Panics on a GPU tensor (a backend bug).
    pub(crate) fn cpu_data(&self) -> &CpuData {
        match &self.storage {
            Storage::Cpu(d) => d,
            Storage::Gpu(_) => panic!("cpu_data() on a GPU tensor"),
        }
    }

    /// GPU buffer of a GPU tensor. Panics on a CPU tensor (a backend bug).
    pub(crate) fn gpu_buffer(&self) -> &Arc<GpuBuffer> {
        match &self.storage {
            Storage::Gpu(b) => b,
            Storage::Cpu(_) => panic!("gpu_buffer() on a CPU tensor"),
        }
    }

    // ----- views --------------------------------------------------------

    /// Same data, new shape. One dimension may be `usize::MAX` to infer it.
    /// Panics when the element count differs (a model-code bug).
    pub fn reshape(&self, shape: &[usize]) -> Tensor {
        let mut shape = shape.to_vec();
        if let Some(i) = shape.iter().position(|&d| d == usize::MAX) {
            let known: usize = shape.iter().filter(|&&d| d != usize::MAX).product();
            assert!(known > 0 && self.elem_count().is_multiple_of(known));
            shape[i] = self.elem_count() / known;
        }
        assert_eq!(
            shape.iter().product::<usize>(),
            self.elem_count(),
            "reshape {:?} -> {:?}",
            self.shape,
            shape
        );
        Tensor {
            shape,
            dtype: self.dtype,
            storage: self.storage.clone(),
        }
    }

    // ----- data movement ------------------------------------------------

    /// Reads the values back as f32 (flushing pending GPU work first).
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        match &self.storage {
            Storage::Cpu(d) => Ok(d.to_f32().into_owned()),
            Storage::Gpu(b) => {
                let bytes = b.context().read_back(b, self.size_in_bytes())?;
                Ok(match self.dtype {
                    DType::F32 => bytemuck::pod_collect_to_vec(&bytes),
                    DType::F16 => bytemuck::pod_collect_to_vec::<u8, f16>(&bytes)
                        .iter()
                        .map(|x| x.to_f32())
                        .collect(),
                })
            }
        }
    }

    /// The tensor on `device` (a copy when it moves, a clone when it is already there).
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        match (&self.storage, device) {
            (Storage::Cpu(_), Device::Cpu) => Ok(self.clone()),
            (Storage::Gpu(b), Device::Gpu(ctx)) if Arc::ptr_eq(&b.context(), ctx) => Ok(self.clone()),
            (Storage::Cpu(d), _) => Tensor::from_cpu_data(
                match &**d {
                    CpuData::F32(v) => CpuData::F32(v.clone()),
                    CpuData::F16(v) => CpuData::F16(v.clone()),
                },
                &self.shape,
                device,
            ),
            (Storage::Gpu(b), _) => {
                let bytes = b.context().read_back(b, self.size_in_bytes())?;
                let data = match self.dtype {
                    DType::F32 => CpuData::F32(bytemuck::pod_collect_to_vec(&bytes)),
                    DType::F16 => CpuData::F16(bytemuck::pod_collect_to_vec(&bytes)),
                };
                Tensor::from_cpu_data(data, &self.shape, device)
            }
        }
    }
}
