//! Binding windows: how a range of a tensor's elements becomes one storage
//! binding. Tensors larger than the storage-binding limit are processed a
//! window at a time; the rule is written once here, for `bind` and for the
//! ops that plan their windows (`ops::tile::fits`).

use super::kernel::Binding;
use super::pool::GpuBuffer;
use super::GpuContext;
use crate::tensor::DType;

/// The bytes a binding of elements `start..start + len` covers: it begins at
/// the aligned offset at or below `start` and ends on the 4-byte word that
/// holds the last element (f16 pairs share a word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// First byte, a multiple of the adapter's offset alignment.
    pub offset: u64,
    /// One past the last byte, a multiple of 4.
    pub end: u64,
    /// Where `start` lies inside the binding, in elements.
    pub base: u32,
}

impl Window {
    /// The window of `len` (at least one) elements of `elem_bytes` bytes from
    /// element `start`, for offsets aligned to `align` bytes.
    pub fn new(elem_bytes: u64, align: u64, start: usize, len: usize) -> Window {
        let byte_start = start as u64 * elem_bytes;
        let offset = byte_start / align * align;
        Window {
            offset,
            end: ((start + len.max(1)) as u64 * elem_bytes).div_ceil(4) * 4,
            base: ((byte_start - offset) / elem_bytes) as u32,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.end - self.offset
    }
}

impl GpuContext {
    /// The window `bind(.., dtype, start, len)` would bind (before it is
    /// cut to the buffer's end).
    pub(crate) fn window(&self, dtype: DType, start: usize, len: usize) -> Window {
        let align = self.limits.min_storage_buffer_offset_alignment as u64;
        Window::new(dtype.size() as u64, align, start, len)
    }

    /// Binds elements `start..start+len` of `buf` (of `dtype`): the binding
    /// begins at the aligned offset at or below `start`, and the returned
    /// element index says where `start` lies inside it. This is how tensors
    /// larger than the storage-binding limit are processed a window at a time.
    ///
    /// A window that starts past the buffer's end can only come from the
    /// placeholder `alloc` returns when it could not allocate (the error is
    /// waiting in `check`): the whole placeholder is bound, so the op records
    /// valid commands whose results are never read.
    pub fn bind<'a>(&self, buf: &'a GpuBuffer, dtype: DType, start: usize, len: usize) -> (Binding<'a>, u32) {
        let w = self.window(dtype, start, len);
        let capacity = buf.capacity();
        let (offset, size, base) = match capacity.checked_sub(w.offset) {
            Some(left) if left > 0 => (w.offset, w.bytes().min(left), w.base),
            _ => (0, capacity, 0),
        };
        assert!(
            size <= self.max_binding_bytes(),
            "binding window of {size} bytes exceeds the adapter limit: split the op"
        );
        (
            Binding {
                buffer: buf.raw(),
                offset,
                size,
            },
            base,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Window;
    use crate::gpu::buffers::PLACEHOLDER_BYTES;
    use crate::gpu::{AdapterPreference, GpuContext};
    use crate::tensor::DType;
    use crate::Error;

    #[test]
    fn windows_start_aligned_and_end_on_words() {
        // Aligned start: the window is exactly the elements.
        let w = Window::new(4, 256, 64, 10);
        assert_eq!(
            w,
            Window {
                offset: 256,
                end: 296,
                base: 0
            }
        );
        // Unaligned start: the window reaches back to the aligned offset.
        let w = Window::new(4, 256, 70, 10);
        assert_eq!(
            w,
            Window {
                offset: 256,
                end: 320,
                base: 6
            }
        );
        assert_eq!(w.bytes(), 64);
        // f16: an odd end rounds up to the word holding the last element.
        let w = Window::new(2, 32, 3, 2);
        assert_eq!(
            w,
            Window {
                offset: 0,
                end: 12,
                base: 3
            }
        );
        // An empty range still binds one element (wgpu refuses empty bindings).
        assert_eq!(Window::new(4, 256, 0, 0).bytes(), 4);
    }

    /// `bind` on the placeholder of a failed allocation, at an offset far past
    /// its 256 bytes, used to compute `capacity - offset` and wrap (or panic):
    /// it must give a valid binding and leave the out-of-memory error to `check`.
    #[test]
    fn bind_on_placeholder_after_out_of_memory() {
        let ctx = GpuContext::new(AdapterPreference::HardwareFirst)
            .unwrap_or_else(|e| panic!("this test needs a wgpu adapter: {e}"));
        let too_big = ctx.limits().max_buffer_size as usize + 1;
        let buf = ctx.alloc(too_big);
        assert_eq!(buf.capacity(), PLACEHOLDER_BYTES);
        let elems = too_big / 4;
        for start in [0, 60, 64, 1 << 20, elems - 1000] {
            let (b, base) = ctx.bind(&buf, DType::F32, start, 1000);
            assert!(
                b.offset + b.size <= PLACEHOLDER_BYTES && b.size > 0,
                "start {start}: offset {} size {}",
                b.offset,
                b.size
            );
            assert!((base as u64) * 4 < b.size, "start {start}: base {base}");

            // wgpu accepts it: a bind group over it validates.
            let scope = ctx.device().push_error_scope(wgpu::ErrorFilter::Validation);
            let layout = ctx.layout(1, 0);
            let params = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: 256,
                usage: wgpu::BufferUsages::UNIFORM,
                mapped_at_creation: false,
            });
            let _group = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &layout.bind_group,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: params.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: b.buffer,
                            offset: b.offset,
                            size: wgpu::BufferSize::new(b.size),
                        }),
                    },
                ],
            });
            let invalid = pollster::block_on(scope.pop());
            assert!(invalid.is_none(), "start {start}: {invalid:?}");
        }
        match ctx.check() {
            Err(Error::OutOfMemory(msg)) => assert!(msg.contains("largest buffer"), "{msg}"),
            other => panic!("expected the out-of-memory error, found {other:?}"),
        }
    }
}
