//! What a job is, as the APIs see it: what it generates ([`JobSpec`]), where it stands
//! ([`JobState`], [`JobSnapshot`]), what it made ([`JobImage`]) and what its subscribers
//! hear ([`JobEvent`]). The queue and registry that move jobs along are in jobs.rs.

use std::sync::Arc;
use std::time::SystemTime;

use crate::pipeline::{GenerationInfo, Mask, Request, RgbImage};

use super::error::ApiError;

/// Random, 16 hex digits: unguessable, so an id is enough to read a job's images.
pub type JobId = String;

/// What a job generates: a checked request (embeddings already resolved by name) and,
/// for img2img, the decoded input image; for inpainting also the mask (its blur set, any
/// inversion applied).
pub struct JobSpec {
    pub request: Request,
    pub init_image: Option<RgbImage>,
    pub mask: Option<Mask>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// `position` jobs are ahead of it in the queue (0: next).
    Queued {
        position: usize,
    },
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn name(self) -> &'static str {
        match self {
            JobState::Queued { .. } => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed | JobState::Cancelled)
    }
}

/// One generated image: exactly the PNG the CLI writes for the same parameters.
#[derive(Debug, Clone)]
pub struct JobImage {
    pub png: Arc<Vec<u8>>,
    pub seed: u64,
    /// A1111's `parameters` text, also in the PNG.
    pub infotext: String,
    pub info: GenerationInfo,
}

/// A job as it is now.
#[derive(Debug, Clone)]
pub struct JobSnapshot {
    pub id: JobId,
    pub state: JobState,
    /// Image of the batch being sampled (0-based) and batch size.
    pub image: usize,
    pub images: usize,
    /// Model calls done for this image and calls per image (0 until the first step).
    pub step: usize,
    pub steps: usize,
    /// Over the whole job, 0 to 1.
    pub progress: f64,
    /// Seconds left, estimated from the time per step so far.
    pub eta: Option<f64>,
    /// PNG of the latest latents' preview (preview.rs).
    pub preview: Option<Arc<Vec<u8>>>,
    pub images_done: Vec<JobImage>,
    /// Why it failed (or 503 for jobs failed by a shutdown).
    pub error: Option<ApiError>,
    /// Things the user should know (an unused concept...), as the CLI prints them.
    pub warnings: Vec<String>,
    pub created: SystemTime,
    pub started: Option<SystemTime>,
    pub finished: Option<SystemTime>,
}

/// A step's progress, as the worker reports it.
#[derive(Debug, Clone)]
pub struct StepUpdate {
    pub image: usize,
    pub images: usize,
    pub step: usize,
    pub steps: usize,
    pub progress: f64,
    pub eta: Option<f64>,
    pub preview: Option<Arc<Vec<u8>>>,
    pub seconds: f64,
}

#[derive(Debug, Clone)]
pub enum JobEvent {
    Queued { position: usize },
    Started,
    Step(StepUpdate),
    Image { index: usize, seed: u64 },
    Finished(Box<JobSnapshot>),
}
