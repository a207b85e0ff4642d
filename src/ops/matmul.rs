//! Matrix multiplication: batched, optionally transposed operands, fused
//! bias, scale and residual epilogue; `linear` is the PyTorch layer on top.

use super::Variant;
use crate::tensor::Tensor;
use crate::{cpu, gpu};

/// Options of [`Tensor::matmul_ex`]. The result is
/// `alpha * op(A) op(B) + bias + residual`, all in f32, rounded once.
#[derive(Debug, Clone, Copy)]
pub struct MatmulOpts<'a> {
    /// A is stored `[.., K, M]`.
    pub trans_a: bool,
    /// B is stored `[.., N, K]` (PyTorch linear weights).
    pub trans_b: bool,
    pub alpha: f32,
    /// `[N]`, added to every row.
    pub bias: Option<&'a Tensor>,
    /// Same shape as the result, added last.
    pub residual: Option<&'a Tensor>,
}

impl Default for MatmulOpts<'_> {
    fn default() -> Self {
        MatmulOpts {
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            bias: None,
            residual: None,
        }
    }
}

/// Sizes of one matmul call after shape checking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatmulDims {
    /// Batch count of A and of the result.
    pub batch: usize,
    /// True when B has batch 1 and is shared by every A batch (weights).
    pub b_shared: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

/// Checks shapes and returns the sizes and the result shape. A is
/// `[b.., M, K]`; B is `[b.., K, N]` with the same batch dims, or rank 2 and
/// shared by every batch.
pub fn matmul_dims(a: &[usize], b: &[usize], opts: &MatmulOpts) -> (MatmulDims, Vec<usize>) {
    assert!(a.len() >= 2 && b.len() >= 2, "matmul: rank < 2: {a:?} x {b:?}");
    let (am, ak) = (a[a.len() - 2], a[a.len() - 1]);
    let (m, k) = if opts.trans_a { (ak, am) } else { (am, ak) };
    let (bk, bn) = (b[b.len() - 2], b[b.len() - 1]);
    let (kb, n) = if opts.trans_b { (bn, bk) } else { (bk, bn) };
    assert_eq!(
        k, kb,
        "matmul: inner dims differ: {a:?} x {b:?} (trans {}, {})",
        opts.trans_a, opts.trans_b
    );
    let batch: usize = a[..a.len() - 2].iter().product();
    let b_batch: usize = b[..b.len() - 2].iter().product();
    let b_shared = b.len() == 2;
    assert!(
        b_shared || (b_batch == batch && a[..a.len() - 2] == b[..b.len() - 2]),
        "matmul: batch dims differ: {a:?} x {b:?}"
    );
    let mut out = a[..a.len() - 2].to_vec();
    out.extend([m, n]);
    if let Some(bias) = opts.bias {
        assert_eq!(bias.shape(), &[n], "matmul: bias shape");
    }
    if let Some(r) = opts.residual {
        assert_eq!(r.shape(), &out[..], "matmul: residual shape");
    }
    (
        MatmulDims {
            batch,
            b_shared,
            m,
            n,
            k,
        },
        out,
    )
}

impl Tensor {
    /// `self @ b` (batched; a rank-2 `b` is shared across the batch).
    pub fn matmul(&self, b: &Tensor) -> Tensor {
        self.matmul_ex(b, &MatmulOpts::default())
    }

    pub fn matmul_ex(&self, b: &Tensor, opts: &MatmulOpts) -> Tensor {
        self.matmul_variant(b, opts, Variant::Tuned)
    }

    pub fn matmul_variant(&self, b: &Tensor, opts: &MatmulOpts, variant: Variant) -> Tensor {
        let mut ops = vec![self, b];
        ops.extend(opts.bias);
        ops.extend(opts.residual);
        super::check_same("matmul", &ops);
        let (dims, out_shape) = matmul_dims(self.shape(), b.shape(), opts);
        if self.is_gpu() {
            gpu::ops::matmul::matmul(self, b, opts, dims, &out_shape, variant)
        } else {
            cpu::matmul::matmul(self, b, opts, dims, &out_shape)
        }
    }

    /// PyTorch `Linear`: `x [.., in] @ w[out, in]^T + bias[out]`.
    pub fn linear(&self, w: &Tensor, bias: Option<&Tensor>) -> Tensor {
        self.linear_residual(w, bias, None)
    }

    /// `linear` with a residual added in the same kernel.
    pub fn linear_residual(&self, w: &Tensor, bias: Option<&Tensor>, residual: Option<&Tensor>) -> Tensor {
        assert_eq!(
            w.rank(),
            2,
            "linear: weight must be [out, in], found {:?}",
            w.shape()
        );
        let lead: Vec<usize> = self.shape()[..self.rank() - 1].to_vec();
        let rows: usize = lead.iter().product();
        let x2 = self.reshape(&[rows, self.dim(-1)]);
        let r2 = residual.map(|r| r.reshape(&[rows, w.dim(0)]));
        let y = x2.matmul_ex(
            w,
            &MatmulOpts {
                trans_b: true,
                bias,
                residual: r2.as_ref(),
                ..Default::default()
            },
        );
        let mut out = lead;
        out.push(w.dim(0));
        y.reshape(&out)
    }
}
