//! Turning models into images: txt2img and img2img, and their inputs and
//! outputs (images, PNG metadata, output files).

pub mod image_io;
pub mod output;
pub mod params;
