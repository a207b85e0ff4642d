//! Turning models into images: txt2img, img2img and inpainting, and their
//! inputs and outputs (images, masks, PNG metadata, output files).
//!
//! ```no_run
//! use sd_wgpu::pipeline::{LoadOptions, NoProgress, Pipeline, Request};
//! # fn main() -> sd_wgpu::Result<()> {
//! let pipe = Pipeline::load(std::path::Path::new("v1-5-pruned-emaonly.safetensors"), &LoadOptions::default())?;
//! let req = Request { seed: 42, ..Request::new("a red fox in the snow") };
//! for out in pipe.txt2img(&req, &mut NoProgress)?.images {
//!     println!("{}", out.info.to_a1111());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Files: `load` (the [`Pipeline`] and its options), `check` (what is
//! verified before loading, also for `sd-wgpu info`), `embedded` (the
//! built-in demo model), `request` (what a
//! generation asks for), `conditioning` (prompts to text states),
//! `generate` (the sampling loops), `inpaint` (its additions for
//! inpainting), `mask` (inpainting masks), `progress` (callbacks, cancellation),
//! `image_io`, `output`, `params` (images in and out, PNG metadata),
//! `atomic` (writing files safely in a shared folder), `loras` (changing the
//! LoRAs of a loaded pipeline, prompt tags checked).

mod atomic;
mod check;
mod conditioning;
pub mod embedded;
mod generate;
pub mod image_io;
mod inpaint;
mod load;
mod loras;
pub mod mask;
pub mod output;
pub mod params;
mod progress;
mod request;

pub use crate::lora::LoraSpec;
pub use check::{check, Checked};
pub use conditioning::{guided, Conditioning};
pub use generate::{Generated, Generation, OnImage, Report, Timings};
pub use image_io::RgbImage;
pub use load::{LoadOptions, ModelSource, Pipeline};
pub use mask::{Mask, DEFAULT_MASK_BLUR};
pub use params::GenerationInfo;
pub use progress::{Control, NoProgress, Progress, Stage, Step};
pub use request::{check_side, Request, TextualInversion, MAX_CFG_SCALE, MAX_SIDE};
