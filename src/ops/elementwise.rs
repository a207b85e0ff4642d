//! Element-wise ops: activations, affine, casts, broadcast add/sub/mul, GEGLU.

use crate::tensor::{DType, Tensor};
use crate::{cpu, gpu};

/// One-input ops. GELU is the exact (erf) form.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    Gelu,
    /// `x * sigmoid(1.702 x)` (CLIP).
    QuickGelu,
    /// `x * sigmoid(x)`.
    Silu,
    Exp,
    /// `x * mul + add`.
    Affine {
        mul: f32,
        add: f32,
    },
    Clamp {
        min: f32,
        max: f32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
}

impl Unary {
    /// The definition every backend follows (the CPU twin calls this).
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Unary::Gelu => 0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2)),
            Unary::QuickGelu => x / (1.0 + (-1.702 * x).exp()),
            Unary::Silu => x / (1.0 + (-x).exp()),
            Unary::Exp => x.exp(),
            Unary::Affine { mul, add } => x * mul + add,
            Unary::Clamp { min, max } => x.clamp(min, max),
        }
    }
}

impl Binary {
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
        }
    }
}

/// Strides of `b` broadcast to `shape` (0 where b has size 1), or None if it
/// does not broadcast. `b` is left-padded with 1s to the rank of `shape`.
pub(crate) fn broadcast_strides(shape: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    if b.len() > shape.len() {
        return None;
    }
    let pad = shape.len() - b.len();
    let mut strides = vec![0; shape.len()];
    let mut s = 1;
    for i in (0..shape.len()).rev() {
        let bd = if i < pad { 1 } else { b[i - pad] };
        if bd == shape[i] {
            strides[i] = if bd == 1 { 0 } else { s };
        } else if bd == 1 {
            strides[i] = 0;
        } else {
            return None;
        }
        s *= bd;
    }
    Some(strides)
}

impl Tensor {
    pub fn unary(&self, op: Unary) -> Tensor {
        if self.is_gpu() {
            gpu::ops::elementwise::unary(self, op)
        } else {
            cpu::elementwise::unary(self, op)
        }
    }

    pub fn gelu(&self) -> Tensor {
        self.unary(Unary::Gelu)
    }

    pub fn quick_gelu(&self) -> Tensor {
        self.unary(Unary::QuickGelu)
    }

    pub fn silu(&self) -> Tensor {
        self.unary(Unary::Silu)
    }

    pub fn exp(&self) -> Tensor {
        self.unary(Unary::Exp)
    }

    /// `self * s`.
    pub fn scale(&self, s: f32) -> Tensor {
        self.unary(Unary::Affine { mul: s, add: 0.0 })
    }

    pub fn clamp(&self, min: f32, max: f32) -> Tensor {
        self.unary(Unary::Clamp { min, max })
    }

    /// `self op other`, with `other` broadcast to `self`'s shape (numpy rules,
    /// but only `other` may broadcast). The result has `self`'s shape.
    pub fn binary(&self, op: Binary, other: &Tensor) -> Tensor {
        super::check_same("binary", &[self, other]);
        assert!(
            broadcast_strides(self.shape(), other.shape()).is_some(),
            "{op:?}: {:?} does not broadcast to {:?}",
            other.shape(),
            self.shape()
        );
        if self.is_gpu() {
            gpu::ops::elementwise::binary(self, op, other)
        } else {
            cpu::elementwise::binary(self, op, other)
        }
    }

    pub fn add(&self, other: &Tensor) -> Tensor {
        self.binary(Binary::Add, other)
    }

    pub fn sub(&self, other: &Tensor) -> Tensor {
        self.binary(Binary::Sub, other)
    }

    pub fn mul(&self, other: &Tensor) -> Tensor {
        self.binary(Binary::Mul, other)
    }

    /// GEGLU: last dim `2F` split into `(h, g)`, result `h * gelu(g)`, shape `[.., F]`.
    pub fn geglu(&self) -> Tensor {
        let last = self.dim(-1);
        assert!(last.is_multiple_of(2), "geglu: odd last dim {:?}", self.shape());
        if self.is_gpu() {
            gpu::ops::elementwise::geglu(self)
        } else {
            cpu::elementwise::geglu(self)
        }
    }

    /// Converts the element type (a copy; identity when already `dtype`).
    pub fn to_dtype(&self, dtype: DType) -> Tensor {
        if self.dtype() == dtype {
            return self.clone();
        }
        if self.is_gpu() {
            gpu::ops::elementwise::cast(self, dtype)
        } else {
            cpu::elementwise::cast(self, dtype)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_rules() {
        assert_eq!(broadcast_strides(&[2, 3, 4], &[2, 3, 4]), Some(vec![12, 4, 1]));
        assert_eq!(broadcast_strides(&[2, 3, 4], &[4]), Some(vec![0, 0, 1]));
        assert_eq!(
            broadcast_strides(&[2, 3, 4, 5], &[2, 3, 1, 1]),
            Some(vec![3, 1, 0, 0])
        );
        assert_eq!(broadcast_strides(&[2, 3], &[3, 3]), None);
        assert_eq!(broadcast_strides(&[3], &[1, 3]), None);
    }

    #[test]
    fn definitions_on_hand_values() {
        // gelu(1) = 0.5 (1 + erf(1/sqrt 2)) = 0.8413447
        assert!((Unary::Gelu.apply(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((Unary::Gelu.apply(-3.0) - -0.004_049_7).abs() < 1e-6);
        // silu(1) = 1 / (1 + e^-1)
        assert!((Unary::Silu.apply(1.0) - 0.731_058_6).abs() < 1e-6);
        assert!((Unary::QuickGelu.apply(1.0) - 0.845_795_6).abs() < 1e-6);
        assert_eq!(Unary::Affine { mul: 2.0, add: 1.0 }.apply(3.0), 7.0);
        assert_eq!(Unary::Clamp { min: -1.0, max: 1.0 }.apply(5.0), 1.0);
    }
}
