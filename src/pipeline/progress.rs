//! Progress reports and cancellation.
//!
//! The pipeline calls [`Progress::stage`] when a phase starts,
//! [`Progress::step`] after every model call and [`Progress::warning`] as
//! soon as it knows something the user should; returning [`Control::Stop`]
//! ends the generation before the next call with `Error::Cancelled` (the
//! image being sampled is dropped; images already handed over stay with
//! the caller, see `Pipeline::txt2img_each`). A closure `FnMut(&Step) -> Control` is a `Progress`;
//! so is an `Arc<AtomicBool>` (stop once it is set, e.g. from a Ctrl-C
//! handler), and [`NoProgress`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the pipeline should do after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

/// The phases of a generation, in order (sampling and decoding once per image).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    EncodingPrompt,
    /// img2img: the input image through the VAE encoder.
    EncodingImage,
    Sampling {
        image: usize,
    },
    Decoding {
        image: usize,
    },
}

/// One finished model call.
pub struct Step<'a> {
    /// Image of the batch (0-based) and batch size.
    pub image: usize,
    pub images: usize,
    /// Model call within this image (0-based) and calls per image. Calls and
    /// steps differ for Heun (two calls per step) and PNDM (one extra call).
    pub call: usize,
    pub calls: usize,
    /// The timestep the UNet was evaluated at.
    pub timestep: f64,
    /// The latents after this call, `[1, C, h, w]` row-major, for previews
    /// (host memory: reading them costs nothing).
    pub latents: &'a [f32],
    pub latent_shape: [usize; 4],
    /// Wall time of this call (UNet, guidance, sampler update).
    pub elapsed: Duration,
}

pub trait Progress {
    /// A phase starts.
    fn stage(&mut self, _stage: Stage) {}

    /// A model call finished; [`Control::Stop`] cancels the generation.
    fn step(&mut self, step: &Step) -> Control;

    /// Something the user should know, as soon as it is known (before the
    /// work it concerns); also collected in `Generation::warnings`.
    fn warning(&mut self, _message: &str) {}

    /// Checked between phases too, so that a cancel request is seen while
    /// the prompt or an image is being encoded or decoded.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Reports nothing, never cancels.
pub struct NoProgress;

impl Progress for NoProgress {
    fn step(&mut self, _step: &Step) -> Control {
        Control::Continue
    }
}

impl<F: FnMut(&Step) -> Control> Progress for F {
    fn step(&mut self, step: &Step) -> Control {
        self(step)
    }
}

/// Stops as soon as the flag is set.
impl Progress for Arc<AtomicBool> {
    fn step(&mut self, _step: &Step) -> Control {
        if self.cancelled() {
            Control::Stop
        } else {
            Control::Continue
        }
    }

    fn cancelled(&self) -> bool {
        self.load(Ordering::Relaxed)
    }
}
