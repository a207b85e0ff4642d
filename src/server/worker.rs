//! The worker: one thread that owns the [`Pipeline`] and runs jobs one after the other, in
//! the order they were queued. It loads the model itself, so that nothing of the model
//! crosses threads; the rest of the server learns about the model from [`ModelInfo`].
//! Before each job it merges the LoRAs the job asks for (see `loras`).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::pipeline::output::encode_png;
use crate::pipeline::{
    Control, Generated, LoadOptions, ModelSource, Pipeline, Progress, Step, TextualInversion,
};
use crate::text::Triggers;
use crate::{Error, Result};

use super::error::ApiError;
use super::jobs::{JobImage, Jobs, StepUpdate, Taken};
use super::loras::{file_error, ServerLoras};
use super::preview::preview_png;
use super::state::{Concept, ModelInfo};

/// Loads the model on a new thread and starts taking jobs there. Returns once the model
/// is loaded (or failed to load); the thread ends when the queue is closed.
pub fn start(
    source: ModelSource,
    options: LoadOptions,
    concepts: Vec<TextualInversion>,
    loras: Arc<ServerLoras>,
    jobs: Jobs,
) -> Result<(ModelInfo, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("sd-wgpu worker".into())
        .spawn(move || {
            let loaded = Pipeline::load(source, &options).and_then(|pipe| {
                let info = model_info(&pipe, concepts, loras.clone())?;
                Ok((pipe, info))
            });
            match loaded {
                Ok((mut pipe, info)) => {
                    let _ = tx.send(Ok(info));
                    run(&mut pipe, &loras, &jobs);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })
        .map_err(|e| Error::io("starting the worker thread", e))?;
    match rx.recv() {
        Ok(Ok(info)) => Ok((info, handle)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::Gpu(
            "the worker thread died while loading the model".into(),
        )),
    }
}

/// What the APIs say about the model; the concepts are checked against its text encoder.
fn model_info(
    pipe: &Pipeline,
    concepts: Vec<TextualInversion>,
    loras: Arc<ServerLoras>,
) -> Result<ModelInfo> {
    let width = pipe.text_encoder().config().hidden_size;
    for c in &concepts {
        c.check_width(width)?;
    }
    let embeddings: Vec<_> = concepts.iter().map(|c| c.embedding.clone()).collect();
    let triggers = Triggers::new(pipe.tokenizer(), &embeddings, width)?;
    Ok(ModelInfo {
        name: pipe.model_name().to_string(),
        hash: pipe.model_hash(),
        vae: pipe.vae_name().map(|name| (name.to_string(), pipe.vae_hash())),
        default_sampler: pipe.default_sampler(),
        default_size: pipe.default_size(),
        vae_scale: pipe.vae_scale(),
        clip_layers: pipe.text_encoder().config().num_hidden_layers,
        concepts: concepts
            .into_iter()
            .map(|c| Concept {
                trigger: c.embedding.trigger.clone(),
                vectors: c.embedding.n,
                embedding: Arc::new(c),
            })
            .collect(),
        tokenizer: pipe.tokenizer().clone(),
        triggers,
        device: pipe.device().describe(),
        loras,
    })
}

/// Takes jobs until the queue closes, switching the pipeline to each job's LoRAs.
fn run(pipe: &mut Pipeline, loras: &ServerLoras, jobs: &Jobs) {
    while let Some(job) = jobs.next() {
        let id = job.id.clone();
        let cancel = job.cancel.clone();
        let switched = loras
            .for_request(&job.spec.request)
            .and_then(|specs| pipe.set_loras(&specs).map_err(|e| ApiError::from(file_error(e))));
        if let Err(e) = switched {
            jobs.finish(&id, Err(e), false);
            continue;
        }
        let pipe = &*pipe;
        // A panic is a bug in sd-wgpu; it fails this job, not the server.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| generate(pipe, jobs, job)))
            .unwrap_or_else(|_| Err(Error::Gpu("internal error (panic) while generating".into())));
        let cancelled = matches!(result, Err(Error::Cancelled)) && cancel.load(Ordering::Relaxed);
        jobs.finish(&id, result.map_err(ApiError::from), cancelled);
    }
}

/// One job: each image encoded as the CLI writes it, as soon as it is decoded.
fn generate(pipe: &Pipeline, jobs: &Jobs, job: Taken) -> Result<()> {
    let Taken { id, spec, cancel } = job;
    let mut progress = JobProgress {
        jobs,
        id: &id,
        cancel: &cancel,
        started: Instant::now(),
    };
    let mut on_image = |g: Generated| -> Result<()> {
        let infotext = g.info.to_a1111();
        let png = encode_png(&g.image, &infotext)?;
        jobs.add_image(
            &id,
            JobImage {
                png: Arc::new(png),
                seed: g.info.seed,
                infotext,
                info: g.info,
            },
        );
        Ok(())
    };
    match (&spec.init_image, &spec.mask) {
        (Some(image), Some(mask)) => {
            pipe.inpaint_each(&spec.request, image, mask, &mut progress, &mut on_image)?
        }
        (Some(image), None) => pipe.img2img_each(&spec.request, image, &mut progress, &mut on_image)?,
        (None, _) => pipe.txt2img_each(&spec.request, &mut progress, &mut on_image)?,
    };
    Ok(())
}

/// Reports each step to the job (with a preview) and stops once the job is cancelled.
struct JobProgress<'a> {
    jobs: &'a Jobs,
    id: &'a str,
    cancel: &'a AtomicBool,
    started: Instant,
}

impl Progress for JobProgress<'_> {
    fn step(&mut self, s: &Step) -> Control {
        let total = (s.images * s.calls).max(1);
        let progress = (s.image * s.calls + s.call + 1) as f64 / total as f64;
        let elapsed = self.started.elapsed().as_secs_f64();
        self.jobs.step(
            self.id,
            StepUpdate {
                image: s.image,
                images: s.images,
                step: s.call + 1,
                steps: s.calls,
                progress,
                eta: Some(elapsed / progress * (1.0 - progress)),
                preview: preview_png(s.latents, s.latent_shape).map(Arc::new),
                seconds: s.elapsed.as_secs_f64(),
            },
        );
        if self.cancelled() {
            Control::Stop
        } else {
            Control::Continue
        }
    }

    fn warning(&mut self, message: &str) {
        self.jobs.warning(self.id, message);
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}
