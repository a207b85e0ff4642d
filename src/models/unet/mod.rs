//! diffusers `UNet2DConditionModel` with the SD 1.x block types, configured
//! from its `config.json` (`UNetConfig`), so a tiny test model and SD 1.5 run
//! the same code.
//!
//! Letters: B batch, C channels, H/W latent height/width, L text tokens
//! (77 per prompt chunk), Dc text width (`cross_attention_dim`).

mod blocks;
pub mod embeddings;
mod transformer;

use std::sync::Arc;

use self::blocks::{DownBlock, MidBlock, UpBlock};
use self::embeddings::{timestep_tensor, TimestepEmbedding};
use super::config::UNetConfig;
use super::layers::{Conv2d, GroupNorm};
use crate::weights::{TensorSource, VarBuilder};
use crate::{DType, Device, Error, Result, Tensor};

pub struct UNet {
    cfg: UNetConfig,
    time_embedding: TimestepEmbedding,
    conv_in: Conv2d,
    down_blocks: Vec<DownBlock>,
    /// `None` when the config says `mid_block_type: null`.
    mid_block: Option<MidBlock>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    dtype: DType,
    device: Device,
}

impl UNet {
    /// Builds the network from `vb` (scoped to the UNet's weights). Missing or
    /// mis-shaped weights are recorded in `vb`; call `vb.finish` to report them.
    pub fn new(vb: &VarBuilder, cfg: &UNetConfig) -> UNet {
        let chans = &cfg.block_out_channels;
        let levels = chans.len();
        let c0 = chans[0];
        UNet {
            cfg: cfg.clone(),
            time_embedding: TimestepEmbedding::new(&vb.pp("time_embedding"), c0, 4 * c0),
            conv_in: Conv2d::new(&vb.pp("conv_in"), cfg.in_channels, c0, 3, 1, 1),
            down_blocks: (0..levels)
                .map(|i| DownBlock::new(&vb.pp("down_blocks").pp(i), cfg, i))
                .collect(),
            mid_block: cfg
                .mid_block_type
                .as_ref()
                .map(|_| MidBlock::new(&vb.pp("mid_block"), cfg)),
            up_blocks: (0..levels)
                .map(|i| UpBlock::new(&vb.pp("up_blocks").pp(i), cfg, i))
                .collect(),
            conv_norm_out: GroupNorm::new(&vb.pp("conv_norm_out"), cfg.norm_num_groups, c0, cfg.norm_eps),
            conv_out: Conv2d::new(&vb.pp("conv_out"), c0, cfg.out_channels, 3, 1, 1),
            dtype: vb.dtype(),
            device: vb.device().clone(),
        }
    }

    /// Loads the UNet from `source` (diffusers key names, no prefix), with
    /// weights stored as `dtype` on `device`; reports every missing,
    /// mis-shaped or unexpected weight at once.
    pub fn load(
        source: Arc<dyn TensorSource>,
        cfg: &UNetConfig,
        device: &Device,
        dtype: DType,
    ) -> Result<UNet> {
        UNet::build(VarBuilder::new(source, device, dtype), cfg)
    }

    /// Compares the weights of `source` (names and shapes) with what `cfg`
    /// needs, reading and allocating none of them; the same report as `load`.
    pub fn check(source: Arc<dyn TensorSource>, cfg: &UNetConfig) -> Result<()> {
        UNet::build(VarBuilder::shapes_only(source), cfg).map(drop)
    }

    fn build(vb: VarBuilder, cfg: &UNetConfig) -> Result<UNet> {
        let unet = UNet::new(&vb, cfg);
        vb.finish("UNet", &[])?;
        Ok(unet)
    }

    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    /// The dtype the weights and activations are stored in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Predicts the noise (epsilon) in `latents`.
    ///
    /// - `latents [B, C_in, H, W]`, any dtype (converted to the model's);
    /// - `timesteps`: one value per batch element, or one for all;
    /// - `context [B, L, Dc]`: the text encoder states (L = 77 per chunk).
    ///
    /// Returns `[B, C_out, H, W]` in f32. H and W may be any size (SD needs
    /// multiples of 8 pixels, i.e. any latent size); odd sizes at a level are
    /// handled by upsampling to the skip connection's size.
    pub fn forward(&self, latents: &Tensor, timesteps: &[f32], context: &Tensor) -> Result<Tensor> {
        self.check_inputs(latents, timesteps, context)?;
        let b = latents.dim(0);
        let x = latents.to_dtype(self.dtype); // [B, C_in, H, W]
        let context = context.to_dtype(self.dtype); // [B, L, Dc]

        // 1. Time embedding: sinusoids on the host (f32), MLP on the device.
        //    Every resnet uses SiLU(temb), so it is applied once here.
        let t: Vec<f32> = if timesteps.len() == 1 {
            vec![timesteps[0]; b]
        } else {
            timesteps.to_vec()
        };
        let c0 = self.cfg.block_out_channels[0];
        let sinusoids = timestep_tensor(
            &t,
            c0,
            self.cfg.flip_sin_to_cos,
            self.cfg.freq_shift,
            self.dtype,
            &self.device,
        )?;
        let temb = self.time_embedding.forward(&sinusoids).silu(); // [B, 4 C0]

        // 2. Input convolution.
        let mut x = self.conv_in.forward(&x); // [B, C0, H, W]

        // 3. Down path; every intermediate state is kept for the up path.
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            x = block.forward(&x, &temb, &context, &mut skips);
        }

        // 4. Mid block at the lowest resolution.
        if let Some(mid) = &self.mid_block {
            x = mid.forward(&x, &temb, &context);
        }

        // 5. Up path, consuming the skips in reverse order.
        for block in &self.up_blocks {
            x = block.forward(&x, &temb, &context, &mut skips);
        }
        debug_assert!(skips.is_empty());

        // 6. Output: GroupNorm + SiLU, conv to the latent channels.
        let x = self.conv_out.forward(&self.conv_norm_out.forward(&x, true)); // [B, C_out, H, W]
        Ok(x.to_dtype(DType::F32))
    }

    fn check_inputs(&self, latents: &Tensor, timesteps: &[f32], context: &Tensor) -> Result<()> {
        if latents.rank() != 4 || latents.dim(1) != self.cfg.in_channels {
            return Err(Error::Shape {
                what: "UNet latents [B, C, H, W] (0: any size)".into(),
                expected: vec![0, self.cfg.in_channels, 0, 0],
                found: latents.shape().to_vec(),
            });
        }
        let b = latents.dim(0);
        if context.rank() != 3 || context.dim(0) != b || context.dim(2) != self.cfg.cross_attention_dim {
            return Err(Error::Shape {
                what: "UNet context [B, L, cross_attention_dim] (0: any size)".into(),
                expected: vec![b, 0, self.cfg.cross_attention_dim],
                found: context.shape().to_vec(),
            });
        }
        if timesteps.len() != 1 && timesteps.len() != b {
            return Err(Error::invalid(
                "timesteps",
                format!("expected 1 or {b} (the batch) values, found {}", timesteps.len()),
            ));
        }
        if !latents.device().same(&self.device) || !context.device().same(&self.device) {
            return Err(Error::invalid(
                "UNet inputs",
                "latents and context must be on the model's device",
            ));
        }
        Ok(())
    }
}
