//! Multi-head softmax attention.
//!
//! Heads stay interleaved in the channel dim (`[B, L, H*D]`, head h owns
//! channels `h*D..(h+1)*D`), as the projections produce them, so no
//! permutes are needed around the kernel.

use super::Variant;
use crate::tensor::Tensor;
use crate::{cpu, gpu};

#[derive(Debug, Clone, Copy)]
pub struct AttentionOpts {
    pub heads: usize,
    /// Query i sees keys 0..=i only (CLIP text encoder).
    pub causal: bool,
    /// Multiplies Q K^T; usually `1/sqrt(D)`.
    pub scale: f32,
}

impl AttentionOpts {
    /// `heads` heads over `width` channels, scale `1/sqrt(width/heads)`,
    /// every query seeing every key.
    pub fn new(heads: usize, width: usize) -> Self {
        AttentionOpts {
            heads,
            causal: false,
            scale: 1.0 / ((width / heads) as f32).sqrt(),
        }
    }

    /// As `new`, with query i seeing keys `0..=i` only.
    pub fn causal(heads: usize, width: usize) -> Self {
        AttentionOpts {
            causal: true,
            ..AttentionOpts::new(heads, width)
        }
    }
}

/// `softmax(scale * Q K^T [+ causal mask]) V` per head.
/// `q [B, Lq, H*D]`, `k`, `v [B, Lk, H*D]` -> `[B, Lq, H*D]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOpts) -> Tensor {
    attention_variant(q, k, v, opts, Variant::Tuned)
}

pub fn attention_variant(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOpts,
    variant: Variant,
) -> Tensor {
    super::check_same("attention", &[q, k, v]);
    assert_eq!(
        q.rank(),
        3,
        "attention: q must be [B, L, H*D], found {:?}",
        q.shape()
    );
    assert_eq!(k.shape(), v.shape(), "attention: k and v differ");
    assert_eq!(k.rank(), 3, "attention: k must be [B, L, H*D]");
    assert_eq!(q.dim(0), k.dim(0), "attention: batch");
    assert_eq!(q.dim(2), k.dim(2), "attention: width");
    assert!(
        opts.heads > 0 && q.dim(2).is_multiple_of(opts.heads),
        "attention: heads"
    );
    assert!(
        !opts.causal || q.dim(1) == k.dim(1),
        "attention: causal needs Lq == Lk"
    );
    if q.is_gpu() {
        gpu::ops::attention::attention(q, k, v, opts, variant)
    } else {
        cpu::attention::attention(q, k, v, opts)
    }
}
