//! diffusers `AutoencoderKL` (the SD VAE): encoder to a diagonal Gaussian
//! posterior over latents, decoder back to pixels.
//!
//! - Scaling: `decode` takes the latents the UNet works on and divides them
//!   by `scaling_factor` (0.18215 for SD) first; `Posterior::mode/sample`
//!   multiply by it. Pixels are in [-1, 1].
//! - Precision: run the VAE in f32 (the default everywhere): the SD VAE
//!   overflows f16 at large sizes. Non-finite values are reported as
//!   `Error::NonFinite` naming the stage, never passed on as a black image.
//! - Tiling ([`Tiling`]): diffusers' `enable_tiling` algorithm (tiles of the
//!   config's `sample_size`, 512 px for SD, a quarter overlap, linear
//!   blends). `Tiling::Auto` tiles images larger than [`AUTO_TILE_PIXELS`]
//!   (768x768): below that, an untiled pass matches diffusers' default
//!   exactly and fits in memory; above it, tiles keep memory at that of one
//!   512x512 tile (about 1 GiB in f32) whatever the image size, at the cost of
//!   small differences where group-norm statistics differ between tiles.
//!
//! Letters: B batch, Z latent channels, h/w latent size, f = 2^(levels-1)
//! (8 for SD), H/W = f*h, f*w pixels.

mod decoder;
mod encoder;
mod mid;
pub mod tiling;

use std::sync::Arc;

use self::decoder::Decoder;
use self::encoder::Encoder;
use self::tiling::{run_tiled, HostImage, TileGeometry};
use super::config::VaeConfig;
use super::layers::Conv2d;
use crate::weights::{TensorSource, VarBuilder};
use crate::{DType, Device, Error, Result, Tensor};

/// Images with more pixels than this are tiled under `Tiling::Auto`.
pub const AUTO_TILE_PIXELS: usize = 768 * 768;

/// Whether a VAE pass is tiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tiling {
    /// Tiled above [`AUTO_TILE_PIXELS`] pixels.
    #[default]
    Auto,
    /// Never tiled (exactly diffusers' default).
    Off,
    /// Tiled whenever the image is larger than one tile (diffusers with
    /// `enable_tiling()`).
    On,
}

impl Tiling {
    fn tiles(self, pixels_h: usize, pixels_w: usize, tile_px: usize) -> bool {
        let larger = pixels_h > tile_px || pixels_w > tile_px;
        match self {
            Tiling::Off => false,
            Tiling::On => larger,
            Tiling::Auto => larger && pixels_h * pixels_w > AUTO_TILE_PIXELS,
        }
    }
}

/// The encoder's output distribution, `[B, Z, h, w]` each, f32, on the VAE's device.
pub struct Posterior {
    pub mean: Tensor,
    /// Clamped to [-30, 20] as in diffusers.
    pub logvar: Tensor,
    scaling_factor: f32,
}

impl Posterior {
    /// The mean, scaled for the UNet (img2img without noise in the encoding).
    pub fn mode(&self) -> Tensor {
        self.mean.scale(self.scaling_factor)
    }

    /// `(mean + exp(logvar / 2) * noise) * scaling_factor`; `noise [B, Z, h, w]`
    /// standard normal, as diffusers' `latent_dist.sample(generator)`.
    pub fn sample(&self, noise: &Tensor) -> Tensor {
        let std = self.logvar.scale(0.5).exp();
        self.mean.add(&std.mul(noise)).scale(self.scaling_factor)
    }
}

pub struct Vae {
    cfg: VaeConfig,
    encoder: Encoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    decoder: Decoder,
    dtype: DType,
    device: Device,
}

/// Host values of `t`, or `Error::NonFinite` naming `stage`.
fn finite_values(t: &Tensor, stage: &str) -> Result<Vec<f32>> {
    let v = t.to_vec_f32()?;
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        let bad = v.iter().filter(|x| !x.is_finite()).count();
        return Err(Error::NonFinite(format!(
            "{stage} ({bad} of {} values, first at {i}: {}){}",
            v.len(),
            v[i],
            if t.dtype() == DType::F16 {
                "; the SD VAE overflows in f16, run it in f32"
            } else {
                ""
            }
        )));
    }
    Ok(v)
}

impl Vae {
    pub fn new(vb: &VarBuilder, cfg: &VaeConfig) -> Vae {
        let z = cfg.latent_channels;
        Vae {
            cfg: cfg.clone(),
            encoder: Encoder::new(&vb.pp("encoder"), cfg),
            quant_conv: cfg
                .use_quant_conv
                .then(|| Conv2d::new(&vb.pp("quant_conv"), 2 * z, 2 * z, 1, 1, 0)),
            post_quant_conv: cfg
                .use_post_quant_conv
                .then(|| Conv2d::new(&vb.pp("post_quant_conv"), z, z, 1, 1, 0)),
            decoder: Decoder::new(&vb.pp("decoder"), cfg),
            dtype: vb.dtype(),
            device: vb.device().clone(),
        }
    }

    /// Loads the VAE (diffusers key names) with weights stored as `dtype`
    /// (f32 recommended) on `device`.
    pub fn load(
        source: Arc<dyn TensorSource>,
        cfg: &VaeConfig,
        device: &Device,
        dtype: DType,
    ) -> Result<Vae> {
        Vae::build(VarBuilder::new(source, device, dtype), cfg)
    }

    /// Compares the weights of `source` (names and shapes) with what `cfg`
    /// needs, reading and allocating none of them; the same report as `load`.
    pub fn check(source: Arc<dyn TensorSource>, cfg: &VaeConfig) -> Result<()> {
        Vae::build(VarBuilder::shapes_only(source), cfg).map(drop)
    }

    fn build(vb: VarBuilder, cfg: &VaeConfig) -> Result<Vae> {
        let vae = Vae::new(&vb, cfg);
        vb.finish("VAE", &[])?;
        Ok(vae)
    }

    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn scaling_factor(&self) -> f32 {
        self.cfg.scaling_factor as f32
    }

    /// Pixels per latent (8 for SD).
    pub fn scale(&self) -> usize {
        self.cfg.scale_factor()
    }

    /// Latents `[B, Z, h, w]` (as the UNet sees them) -> image `[B, 3, f h, f w]`
    /// on the host, f32, values about [-1, 1].
    pub fn decode(&self, latents: &Tensor, tiling: Tiling) -> Result<Tensor> {
        self.check_input(latents, self.cfg.latent_channels, "latents")?;
        finite_values(latents, "latents given to the VAE decoder")?;
        let z = latents.to_dtype(self.dtype).scale(1.0 / self.scaling_factor()); // [B, Z, h, w]
        let f = self.scale();
        let tile = self.cfg.sample_size / f;
        let img = if tiling.tiles(z.dim(2) * f, z.dim(3) * f, self.cfg.sample_size) {
            let geo = TileGeometry {
                tile_in: tile,
                tile_out: self.cfg.sample_size,
            };
            run_tiled(&z, geo, (f, 1), |t| self.decode_untiled(t))?
        } else {
            self.decode_untiled(&z)?
        };
        Tensor::from_vec(img.data, &img.shape, &Device::Cpu)
    }

    /// Unscaled latents `[B, Z, h, w]` in the model dtype -> image on the host.
    fn decode_untiled(&self, z: &Tensor) -> Result<HostImage> {
        let z = match &self.post_quant_conv {
            Some(c) => c.forward(z),
            None => z.clone(),
        };
        let mid = self.decoder.forward_mid(&z); // [B, C_last, h, w]
        finite_values(&mid, "VAE decoder mid block")?;
        let img = self.decoder.forward_up(&mid); // [B, 3, H, W]
        let shape = [img.dim(0), img.dim(1), img.dim(2), img.dim(3)];
        Ok(HostImage {
            shape,
            data: finite_values(&img, "VAE decoder output")?,
        })
    }

    /// Image `[B, 3, H, W]` in [-1, 1] -> the posterior over latents.
    pub fn encode(&self, image: &Tensor, tiling: Tiling) -> Result<Posterior> {
        self.check_input(image, self.cfg.in_channels, "image")?;
        let x = image.to_dtype(self.dtype); // [B, 3, H, W]
        let f = self.scale();
        let moments = if tiling.tiles(x.dim(2), x.dim(3), self.cfg.sample_size) {
            let geo = TileGeometry {
                tile_in: self.cfg.sample_size,
                tile_out: self.cfg.sample_size / f,
            };
            let m = run_tiled(&x, geo, (1, f), |t| {
                let m = self.encode_moments(t);
                let shape = [m.dim(0), m.dim(1), m.dim(2), m.dim(3)];
                Ok(HostImage {
                    shape,
                    data: finite_values(&m, "VAE encoder output")?,
                })
            })?;
            Tensor::from_vec(m.data, &m.shape, &self.device)?
        } else {
            let m = self.encode_moments(&x).to_dtype(DType::F32);
            finite_values(&m, "VAE encoder output")?;
            m
        }; // [B, 2Z, h, w]
        let zc = self.cfg.latent_channels;
        Ok(Posterior {
            mean: moments.narrow(1, 0, zc),
            logvar: moments.narrow(1, zc, zc).clamp(-30.0, 20.0),
            scaling_factor: self.scaling_factor(),
        })
    }

    /// `[B, 3, H, W]` -> moments `[B, 2Z, h, w]` in the model dtype.
    fn encode_moments(&self, x: &Tensor) -> Tensor {
        let m = self.encoder.forward(x);
        match &self.quant_conv {
            Some(c) => c.forward(&m),
            None => m,
        }
    }

    fn check_input(&self, x: &Tensor, channels: usize, what: &str) -> Result<()> {
        if x.rank() != 4 || x.dim(1) != channels {
            return Err(Error::Shape {
                what: format!("VAE {what} [B, C, H, W] (0: any size)"),
                expected: vec![0, channels, 0, 0],
                found: x.shape().to_vec(),
            });
        }
        if !x.device().same(&self.device) {
            return Err(Error::invalid(
                format!("VAE {what}"),
                "must be on the VAE's device",
            ));
        }
        Ok(())
    }
}
