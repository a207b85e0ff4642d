//! The CLIP text encoder (transformers `CLIPTextModel`): token + position
//! embeddings, pre-LayerNorm transformer layers with causal self-attention and
//! a QuickGELU (or GELU) MLP, final LayerNorm.
//!
//! One 77-token chunk is encoded per call; long prompts are split into chunks
//! by the caller, encoded separately and concatenated on the sequence axis.
//!
//! Letters: L tokens (77), D width (`hidden_size`), F MLP width.

use std::sync::Arc;

use super::config::ClipConfig;
use super::layers::{LayerNorm, Linear};
use crate::ops::{attention, AttentionOpts};
use crate::weights::{TensorSource, VarBuilder};
use crate::{DType, Device, Error, Result, Tensor};

/// Causal multi-head self-attention; all projections have biases.
struct ClipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
}

impl ClipAttention {
    fn new(vb: &VarBuilder, d: usize, heads: usize) -> ClipAttention {
        ClipAttention {
            q_proj: Linear::new(&vb.pp("q_proj"), d, d, true),
            k_proj: Linear::new(&vb.pp("k_proj"), d, d, true),
            v_proj: Linear::new(&vb.pp("v_proj"), d, d, true),
            out_proj: Linear::new(&vb.pp("out_proj"), d, d, true),
            heads,
        }
    }

    /// `x [1, L, D]` -> `residual + attn(x)`.
    fn forward(&self, x: &Tensor, residual: &Tensor) -> Tensor {
        let q = self.q_proj.forward(x); // [1, L, D]
        let k = self.k_proj.forward(x);
        let v = self.v_proj.forward(x);
        let o = attention(&q, &k, &v, &AttentionOpts::new(self.heads, q.dim(2), true));
        self.out_proj.forward_residual(&o, residual)
    }
}

struct ClipMlp {
    fc1: Linear,
    fc2: Linear,
    quick_gelu: bool,
}

impl ClipMlp {
    /// `x [1, L, D]` -> `residual + fc2(act(fc1(x)))`.
    fn forward(&self, x: &Tensor, residual: &Tensor) -> Tensor {
        let h = self.fc1.forward(x); // [1, L, F]
        let h = if self.quick_gelu { h.quick_gelu() } else { h.gelu() };
        self.fc2.forward_residual(&h, residual)
    }
}

struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: ClipAttention,
    layer_norm2: LayerNorm,
    mlp: ClipMlp,
}

impl EncoderLayer {
    fn new(vb: &VarBuilder, cfg: &ClipConfig) -> EncoderLayer {
        let (d, f, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        EncoderLayer {
            layer_norm1: LayerNorm::new(&vb.pp("layer_norm1"), d, eps),
            self_attn: ClipAttention::new(&vb.pp("self_attn"), d, cfg.num_attention_heads),
            layer_norm2: LayerNorm::new(&vb.pp("layer_norm2"), d, eps),
            mlp: ClipMlp {
                fc1: Linear::new(&vb.pp("mlp.fc1"), d, f, true),
                fc2: Linear::new(&vb.pp("mlp.fc2"), f, d, true),
                quick_gelu: cfg.hidden_act == "quick_gelu",
            },
        }
    }

    /// `[1, L, D]` -> `[1, L, D]`.
    fn forward(&self, x: &Tensor) -> Tensor {
        let x = self.self_attn.forward(&self.layer_norm1.forward(x), x);
        self.mlp.forward(&self.layer_norm2.forward(&x), &x)
    }
}

pub struct ClipTextModel {
    cfg: ClipConfig,
    /// `[V, D]`.
    token_embedding: Tensor,
    /// `[P, D]`, P = `max_position_embeddings`.
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    dtype: DType,
    device: Device,
}

/// Key prefix of the transformers 4.x files (every SD 1.x checkpoint);
/// transformers 5 saves without it.
const TEXT_MODEL_PREFIX: &str = "text_model";

/// Stored position ids are ignored (merged checkpoints often corrupt them):
/// positions are always 0..L-1.
const IGNORED: &[&str] = &["position_ids"];

impl ClipTextModel {
    /// Builds the encoder from `vb`, scoped to the weights that contain
    /// `embeddings.*`, `encoder.layers.*` and `final_layer_norm.*`.
    pub fn new(vb: &VarBuilder, cfg: &ClipConfig) -> ClipTextModel {
        let d = cfg.hidden_size;
        let emb = vb.pp("embeddings");
        ClipTextModel {
            cfg: cfg.clone(),
            token_embedding: emb.get("token_embedding.weight", &[cfg.vocab_size, d]),
            position_embedding: emb.get("position_embedding.weight", &[cfg.max_position_embeddings, d]),
            layers: (0..cfg.num_hidden_layers)
                .map(|i| EncoderLayer::new(&vb.pp("encoder.layers").pp(i), cfg))
                .collect(),
            final_layer_norm: LayerNorm::new(&vb.pp("final_layer_norm"), d, cfg.layer_norm_eps),
            dtype: vb.dtype(),
            device: vb.device().clone(),
        }
    }

    /// Loads the encoder from `source`, with or without the `text_model.`
    /// prefix, reporting every missing, mis-shaped or unexpected weight.
    pub fn load(
        source: Arc<dyn TensorSource>,
        cfg: &ClipConfig,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        ClipTextModel::build(VarBuilder::new(source, device, dtype), cfg)
    }

    /// Compares the weights of `source` (names and shapes) with what `cfg`
    /// needs, reading and allocating none of them; the same report as `load`.
    pub fn check(source: Arc<dyn TensorSource>, cfg: &ClipConfig) -> Result<()> {
        ClipTextModel::build(VarBuilder::shapes_only(source), cfg).map(drop)
    }

    fn build(vb: VarBuilder, cfg: &ClipConfig) -> Result<Self> {
        let vb = if vb.contains(&format!("{TEXT_MODEL_PREFIX}.embeddings.token_embedding.weight")) {
            vb.pp(TEXT_MODEL_PREFIX)
        } else {
            vb
        };
        let model = ClipTextModel::new(&vb, cfg);
        vb.finish("text encoder", IGNORED)?;
        Ok(model)
    }

    pub fn config(&self) -> &ClipConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Encodes one chunk of token ids (77 for SD) -> `[1, L, D]` in f32.
    ///
    /// - `injected`: `(position, vector)` pairs; the token embedding at each
    ///   position is replaced by the vector (textual inversion), before the
    ///   position embeddings are added;
    /// - `clip_skip`: A1111's convention: 1 = the last layer, 2 = the
    ///   penultimate layer's output ("CLIP skip 2", diffusers `clip_skip=1`),
    ///   ...; the final LayerNorm is applied in every case, as A1111 and
    ///   diffusers do.
    pub fn forward(&self, ids: &[u32], injected: &[(usize, &[f32])], clip_skip: usize) -> Result<Tensor> {
        self.check_inputs(ids, injected, clip_skip)?;
        let (l, d) = (ids.len(), self.cfg.hidden_size);

        // 1. Token embeddings, with injected vectors spliced in row by row.
        let tokens = Tensor::embedding(&self.token_embedding, ids); // [L, D]
        let tokens = self.inject(&tokens, injected)?;

        // 2. Position embeddings 0..L-1.
        let x = tokens
            .add(&self.position_embedding.narrow(0, 0, l))
            .reshape(&[1, l, d]); // [1, L, D]

        // 3. The transformer layers, stopping `clip_skip - 1` layers early.
        let used = self.layers.len() + 1 - clip_skip;
        let x = self.layers[..used].iter().fold(x, |x, layer| layer.forward(&x));

        // 4. Final LayerNorm.
        Ok(self.final_layer_norm.forward(&x).to_dtype(DType::F32))
    }

    /// `tokens [L, D]` with the rows at the injected positions replaced.
    fn inject(&self, tokens: &Tensor, injected: &[(usize, &[f32])]) -> Result<Tensor> {
        if injected.is_empty() {
            return Ok(tokens.clone());
        }
        let mut sorted: Vec<_> = injected.to_vec();
        sorted.sort_by_key(|&(p, _)| p);
        let d = self.cfg.hidden_size;
        let mut pieces = Vec::new();
        let mut next = 0;
        for (pos, vector) in sorted {
            if pos > next {
                pieces.push(tokens.narrow(0, next, pos - next));
            }
            pieces.push(Tensor::from_f32(
                vector.to_vec(),
                &[1, d],
                self.dtype,
                &self.device,
            )?);
            next = pos + 1;
        }
        if next < tokens.dim(0) {
            pieces.push(tokens.narrow(0, next, tokens.dim(0) - next));
        }
        Ok(Tensor::cat(&pieces.iter().collect::<Vec<_>>(), 0))
    }

    fn check_inputs(&self, ids: &[u32], injected: &[(usize, &[f32])], clip_skip: usize) -> Result<()> {
        let c = &self.cfg;
        if ids.is_empty() || ids.len() > c.max_position_embeddings {
            return Err(Error::invalid(
                "token ids",
                format!(
                    "expected 1 to {} ids per chunk, found {}",
                    c.max_position_embeddings,
                    ids.len()
                ),
            ));
        }
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= c.vocab_size) {
            return Err(Error::invalid(
                "token ids",
                format!("id {bad} is outside the vocabulary of {} tokens", c.vocab_size),
            ));
        }
        for (i, &(pos, v)) in injected.iter().enumerate() {
            if pos >= ids.len() || v.len() != c.hidden_size {
                return Err(Error::invalid(
                    "injected embedding",
                    format!(
                        "expected a position below {} and {} values, found position {pos} and {} values",
                        ids.len(),
                        c.hidden_size,
                        v.len()
                    ),
                ));
            }
            if injected[..i].iter().any(|&(p, _)| p == pos) {
                return Err(Error::invalid(
                    "injected embedding",
                    format!("position {pos} given twice"),
                ));
            }
        }
        if clip_skip == 0 || clip_skip > c.num_hidden_layers {
            return Err(Error::invalid(
                "clip_skip",
                format!(
                    "expected 1 (no skip) to {}, found {clip_skip}",
                    c.num_hidden_layers
                ),
            ));
        }
        Ok(())
    }
}
