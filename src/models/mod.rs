//! The SD 1.x networks written on the tensor API, configured from diffusers
//! `config.json` files: the CLIP text encoder, the UNet and the VAE.

pub mod clip;
pub mod config;
pub mod layers;
pub mod resnet;
pub mod unet;
pub mod vae;

pub use clip::ClipTextModel;
pub use unet::UNet;
pub use vae::{Posterior, Tiling, Vae};
