//! Data movement: permute, concat, narrow, nearest upsampling, embedding gather.

use super::Variant;
use crate::tensor::Tensor;
use crate::{cpu, gpu};

/// Highest rank `permute` handles.
pub const MAX_RANK: usize = 6;

impl Tensor {
    /// Reorders dims: result dim i is input dim `perm[i]` (a copy).
    pub fn permute(&self, perm: &[usize]) -> Tensor {
        self.permute_variant(perm, Variant::Tuned)
    }

    /// `permute` with the GPU kernel chosen: `Naive` gathers one value per
    /// thread for every permutation (kept to measure the tiled transpose
    /// against; over the binding limit it only splits along a kept leading dim).
    pub fn permute_variant(&self, perm: &[usize], variant: Variant) -> Tensor {
        assert_eq!(
            perm.len(),
            self.rank(),
            "permute: {perm:?} for {:?}",
            self.shape()
        );
        assert!(self.rank() <= MAX_RANK, "permute: rank > {MAX_RANK}");
        let mut seen = [false; MAX_RANK];
        for &p in perm {
            assert!(
                p < self.rank() && !seen[p],
                "permute: {perm:?} is not a permutation"
            );
            seen[p] = true;
        }
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return self.clone();
        }
        if self.is_gpu() {
            gpu::ops::layout::permute(self, perm, variant)
        } else {
            cpu::layout::permute(self, perm)
        }
    }

    /// Swaps two dims (a copy).
    pub fn transpose(&self, a: usize, b: usize) -> Tensor {
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Concatenation along `dim`; every other dim must agree.
    pub fn cat(tensors: &[&Tensor], dim: usize) -> Tensor {
        assert!(!tensors.is_empty(), "cat: no tensors");
        super::check_same("cat", tensors);
        let s0 = tensors[0].shape();
        assert!(dim < s0.len(), "cat: dim {dim} for {s0:?}");
        for t in tensors {
            let s = t.shape();
            assert!(
                s.len() == s0.len() && s.iter().zip(s0).enumerate().all(|(i, (a, b))| i == dim || a == b),
                "cat: {s:?} vs {s0:?} along {dim}"
            );
        }
        if tensors[0].is_gpu() {
            gpu::ops::layout::cat(tensors, dim)
        } else {
            cpu::layout::cat(tensors, dim)
        }
    }

    /// Elements `start..start+len` along `dim` (a copy).
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Tensor {
        assert!(
            dim < self.rank() && start + len <= self.dim(dim as isize),
            "narrow {dim} {start}+{len} of {:?}",
            self.shape()
        );
        if start == 0 && len == self.dim(dim as isize) {
            return self.clone();
        }
        if self.is_gpu() {
            gpu::ops::layout::narrow(self, dim, start, len)
        } else {
            cpu::layout::narrow(self, dim, start, len)
        }
    }

    /// `n` equal chunks along `dim`.
    pub fn chunk(&self, n: usize, dim: usize) -> Vec<Tensor> {
        let size = self.dim(dim as isize);
        assert!(size.is_multiple_of(n), "chunk: {size} into {n}");
        (0..n).map(|i| self.narrow(dim, i * size / n, size / n)).collect()
    }

    /// Nearest-neighbour upsampling of `[N, C, H, W]` to `[N, C, out_h, out_w]`
    /// with PyTorch's rule `src = floor(dst * (in / out))` (scale and product
    /// in f32, as `F.interpolate(size=..)`). `(2H, 2W)` is SD's upsampler;
    /// other sizes serve `forward_upsample_size`.
    pub fn upsample_nearest(&self, out_h: usize, out_w: usize) -> Tensor {
        assert_eq!(self.rank(), 4, "upsample: input {:?}", self.shape());
        assert!(
            self.dim(2) * self.dim(3) > 0 || out_h * out_w == 0,
            "upsample: empty input plane {:?} to {out_h}x{out_w}",
            self.shape()
        );
        if self.is_gpu() {
            gpu::ops::layout::upsample_nearest(self, out_h, out_w)
        } else {
            cpu::layout::upsample_nearest(self, out_h, out_w)
        }
    }

    /// Rows `ids` of `table [V, D]` -> `[ids.len(), D]`.
    pub fn embedding(table: &Tensor, ids: &[u32]) -> Tensor {
        assert_eq!(table.rank(), 2, "embedding: table {:?}", table.shape());
        let v = table.dim(0);
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= v) {
            panic!("embedding: id {bad} >= vocabulary {v}");
        }
        if table.is_gpu() {
            gpu::ops::layout::embedding(table, ids)
        } else {
            cpu::layout::embedding(table, ids)
        }
    }
}
