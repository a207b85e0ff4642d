//! Bind-group and pipeline layouts (one per binding signature) and the
//! pipeline cache: every kernel variant is compiled once, on first use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::kernel::Kernel;
use super::pool::lock;
use super::preprocess::{assemble, Define};
use super::GpuContext;
use crate::tensor::DType;
use crate::{Error, Result};

/// The layouts of one binding signature: a uniform params block, then
/// `inputs` read-only and `outputs` read-write storage buffers.
pub(super) struct Layout {
    pub bind_group: wgpu::BindGroupLayout,
    pub pipeline: wgpu::PipelineLayout,
}

/// Compiled pipelines by (shader, entry, dtype, subgroups, defines), and
/// layouts by (inputs, outputs).
#[derive(Default)]
pub(super) struct PipelineCache {
    pipelines: Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>,
    layouts: Mutex<HashMap<(u32, u32), Arc<Layout>>>,
}

impl GpuContext {
    /// The layouts for kernels with `inputs` inputs and `outputs` outputs.
    pub(super) fn layout(&self, inputs: u32, outputs: u32) -> Arc<Layout> {
        let mut layouts = lock(&self.pipelines.layouts);
        layouts
            .entry((inputs, outputs))
            .or_insert_with(|| Arc::new(self.create_layout(inputs, outputs)))
            .clone()
    }

    fn create_layout(&self, inputs: u32, outputs: u32) -> Layout {
        let buffer = |ty| wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: false,
            min_binding_size: None,
        };
        let params = wgpu::BufferBindingType::Uniform;
        let storage = |i| wgpu::BufferBindingType::Storage {
            read_only: i < inputs,
        };
        let entries: Vec<wgpu::BindGroupLayoutEntry> = std::iter::once(buffer(params))
            .chain((0..inputs + outputs).map(|i| buffer(storage(i))))
            .enumerate()
            .map(|(binding, ty)| wgpu::BindGroupLayoutEntry {
                binding: binding as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty,
                count: None,
            })
            .collect();
        let bind_group = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("kernel bindings"),
                entries: &entries,
            });
        let pipeline = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: None,
                bind_group_layouts: &[Some(&bind_group)],
                immediate_size: 0,
            });
        Layout { bind_group, pipeline }
    }

    /// The compiled pipeline of a kernel variant, compiled on first use.
    pub fn pipeline(
        &self,
        kernel: &Kernel,
        dtype: DType,
        defines: &[Define],
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        if dtype == DType::F16 && !self.caps().f16 {
            return Err(Error::Unsupported(format!(
                "{} has no shader f16 support; use f32 (--dtype f32)",
                self.info().name
            )));
        }
        let subgroups = self.caps().subgroups;
        let key = format!(
            "{}:{}:{}:sg{}:{:?}",
            kernel.shader.name,
            kernel.entry,
            dtype.name(),
            subgroups as u8,
            defines
        );
        if let Some(p) = lock(&self.pipelines.pipelines).get(&key) {
            return Ok(p.clone());
        }
        let src = assemble(kernel.shader.source, dtype, subgroups, defines).map_err(|msg| Error::Shader {
            name: kernel.shader.name.into(),
            msg,
        })?;
        let layout = self.layout(kernel.inputs, kernel.outputs);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(kernel.shader.name),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.entry),
                layout: Some(&layout.pipeline),
                module: &module,
                entry_point: Some(kernel.entry),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Shader {
                name: format!(
                    "{}::{} ({}, {:?})",
                    kernel.shader.name,
                    kernel.entry,
                    dtype.name(),
                    defines
                ),
                msg: e.to_string(),
            });
        }
        let p = Arc::new(pipeline);
        lock(&self.pipelines.pipelines).insert(key, p.clone());
        Ok(p)
    }
}
