//! Normalisations: group norm (with optional fused SiLU) and layer norm.

use crate::tensor::Tensor;
use crate::{cpu, gpu};

impl Tensor {
    /// GroupNorm over `x [N, C, *]` with `groups` groups of `C / groups`
    /// channels, per-channel `gamma`, `beta` `[C]`.
    pub fn group_norm(&self, groups: usize, eps: f32, gamma: &Tensor, beta: &Tensor) -> Tensor {
        self.group_norm_kernel(groups, eps, gamma, beta, false)
    }

    /// `group_norm` followed by SiLU, in the same kernel.
    pub fn group_norm_silu(&self, groups: usize, eps: f32, gamma: &Tensor, beta: &Tensor) -> Tensor {
        self.group_norm_kernel(groups, eps, gamma, beta, true)
    }

    fn group_norm_kernel(
        &self,
        groups: usize,
        eps: f32,
        gamma: &Tensor,
        beta: &Tensor,
        silu: bool,
    ) -> Tensor {
        super::check_same("group_norm", &[self, gamma, beta]);
        assert!(self.rank() >= 2, "group_norm: input {:?}", self.shape());
        let c = self.dim(1);
        assert!(
            groups > 0 && c.is_multiple_of(groups),
            "group_norm: {c} channels, {groups} groups"
        );
        assert_eq!(gamma.shape(), &[c], "group_norm: gamma");
        assert_eq!(beta.shape(), &[c], "group_norm: beta");
        if self.is_gpu() {
            gpu::ops::norm::group_norm(self, groups, eps, gamma, beta, silu)
        } else {
            cpu::norm::group_norm(self, groups, eps, gamma, beta, silu)
        }
    }

    /// LayerNorm over the last dim with `gamma`, `beta` `[D]`.
    pub fn layer_norm(&self, gamma: &Tensor, beta: &Tensor, eps: f32) -> Tensor {
        super::check_same("layer_norm", &[self, gamma, beta]);
        let d = self.dim(-1);
        assert_eq!(gamma.shape(), &[d], "layer_norm: gamma");
        assert_eq!(beta.shape(), &[d], "layer_norm: beta");
        if self.is_gpu() {
            gpu::ops::norm::layer_norm(self, gamma, beta, eps)
        } else {
            cpu::norm::layer_norm(self, gamma, beta, eps)
        }
    }
}
