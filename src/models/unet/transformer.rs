//! diffusers `Transformer2DModel` (the UNet's spatial transformer) and its
//! `BasicTransformerBlock`: self-attention, cross-attention on the text
//! states, GEGLU feed-forward, each pre-LayerNorm with a residual.
//!
//! Letters: B batch, C channels, I inner width (C in every SD config), H/W
//! spatial, N = H*W tokens, L text tokens, Dc text width.

use crate::models::layers::{Conv2d, GroupNorm, LayerNorm, Linear};
use crate::ops::{attention, AttentionOpts};
use crate::weights::VarBuilder;
use crate::Tensor;

/// diffusers `Attention` as the UNet uses it: bias-free q/k/v, `to_out.0`
/// with bias. Keys and values come from the text states (cross-attention) or
/// from the input itself (self-attention).
pub struct CrossAttention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
}

impl CrossAttention {
    /// `c_kv`: width of the key/value source (`c` for self-attention).
    pub fn new(vb: &VarBuilder, c: usize, c_kv: usize, heads: usize) -> CrossAttention {
        CrossAttention {
            to_q: Linear::no_bias(&vb.pp("to_q"), c, c),
            to_k: Linear::no_bias(&vb.pp("to_k"), c_kv, c),
            to_v: Linear::no_bias(&vb.pp("to_v"), c_kv, c),
            to_out: Linear::with_bias(&vb.pp("to_out").pp(0), c, c),
            heads,
        }
    }

    /// `x [B, N, I]`, `context [B, L, Dc]` (None: self-attention) -> `residual + attn`.
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>, residual: &Tensor) -> Tensor {
        let kv = context.unwrap_or(x);
        let q = self.to_q.forward(x); // [B, N, C]
        let k = self.to_k.forward(kv); // [B, L, C]
        let v = self.to_v.forward(kv); // [B, L, C]
        let o = attention(&q, &k, &v, &AttentionOpts::new(self.heads, q.dim(2)));
        self.to_out.forward_residual(&o, residual)
    }
}

/// GEGLU feed-forward: `net.0.proj` to `2 * 4C`, `a * gelu(b)`, `net.2` back to C.
pub struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    pub fn new(vb: &VarBuilder, c: usize) -> FeedForward {
        let inner = 4 * c;
        FeedForward {
            proj: Linear::with_bias(&vb.pp("net.0.proj"), c, 2 * inner),
            out: Linear::with_bias(&vb.pp("net.2"), inner, c),
        }
    }

    /// `x [B, N, C]` -> `residual + ff(x)`.
    pub fn forward(&self, x: &Tensor, residual: &Tensor) -> Tensor {
        let h = self.proj.forward(x).geglu(); // [B, N, 4C]
        self.out.forward_residual(&h, residual)
    }
}

pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: CrossAttention,
    norm2: LayerNorm,
    attn2: CrossAttention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    pub fn new(vb: &VarBuilder, c: usize, c_context: usize, heads: usize) -> BasicTransformerBlock {
        BasicTransformerBlock {
            norm1: LayerNorm::new(&vb.pp("norm1"), c, 1e-5),
            attn1: CrossAttention::new(&vb.pp("attn1"), c, c, heads),
            norm2: LayerNorm::new(&vb.pp("norm2"), c, 1e-5),
            attn2: CrossAttention::new(&vb.pp("attn2"), c, c_context, heads),
            norm3: LayerNorm::new(&vb.pp("norm3"), c, 1e-5),
            ff: FeedForward::new(&vb.pp("ff"), c),
        }
    }

    /// `x [B, N, C]`, `context [B, L, Dc]` -> `[B, N, C]`.
    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Tensor {
        let x = self.attn1.forward(&self.norm1.forward(x), None, x);
        let x = self.attn2.forward(&self.norm2.forward(&x), Some(context), &x);
        self.ff.forward(&self.norm3.forward(&x), &x)
    }
}

/// Sizes of one spatial transformer.
#[derive(Debug, Clone, Copy)]
pub struct Transformer2DConfig {
    pub channels: usize,
    pub heads: usize,
    pub layers: usize,
    pub groups: usize,
    pub context_dim: usize,
    /// `proj_in`/`proj_out` are linear layers (`[C, C]`) rather than 1x1 convs
    /// (`[C, C, 1, 1]`); the arithmetic is the same.
    pub linear_projection: bool,
}

pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Linear,
    blocks: Vec<BasicTransformerBlock>,
    /// Runs as a 1x1 conv whatever its stored form, to fuse the residual.
    proj_out: Conv2d,
}

/// A projection stored as a linear `[out, in]` or a 1x1 conv `[out, in, 1, 1]`,
/// loaded as the `[out, in]` weight of a linear layer and its bias.
fn projection(vb: &VarBuilder, inp: usize, out: usize, linear: bool) -> (Tensor, Tensor) {
    let w = if linear {
        vb.get("weight", &[out, inp])
    } else {
        vb.get("weight", &[out, inp, 1, 1]).reshape(&[out, inp])
    };
    (w, vb.get("bias", &[out]))
}

impl Transformer2DModel {
    pub fn new(vb: &VarBuilder, c: Transformer2DConfig) -> Transformer2DModel {
        let ch = c.channels;
        // diffusers' inner width: heads * (C / heads), C unless C % heads != 0.
        let inner = c.heads * (ch / c.heads);
        let (w_in, b_in) = projection(&vb.pp("proj_in"), ch, inner, c.linear_projection);
        let (w_out, b_out) = projection(&vb.pp("proj_out"), inner, ch, c.linear_projection);
        Transformer2DModel {
            norm: GroupNorm::new(&vb.pp("norm"), c.groups, ch, 1e-6),
            proj_in: Linear::from_parts(w_in, Some(b_in)),
            blocks: (0..c.layers)
                .map(|i| {
                    BasicTransformerBlock::new(
                        &vb.pp("transformer_blocks").pp(i),
                        inner,
                        c.context_dim,
                        c.heads,
                    )
                })
                .collect(),
            proj_out: Conv2d::from_parts(w_out.reshape(&[ch, inner, 1, 1]), Some(b_out), 1, [0; 4]),
        }
    }

    /// `x [B, C, H, W]`, `context [B, L, Dc]` -> `x + transformer(x)`.
    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Tensor {
        let (b, c, h, w) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
        let t = self.norm.forward(x).reshape(&[b, c, h * w]).transpose(1, 2); // [B, N, C]
        let mut t = self.proj_in.forward(&t); // [B, N, I]
        for block in &self.blocks {
            t = block.forward(&t, context);
        }
        // Back to NCHW first, so proj_out runs as a 1x1 conv with the residual
        // add fused into its epilogue.
        let t = t.transpose(1, 2).reshape(&[b, t.dim(2), h, w]); // [B, I, H, W]
        self.proj_out.forward_residual(&t, x)
    }
}
