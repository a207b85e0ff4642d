//! [`check`]: everything [`Pipeline::load`](super::Pipeline::load) verifies
//! about an opened checkpoint before it reads or allocates a weight, and what
//! `sd-wgpu info` reports: the components agree with each other (latent
//! channels, text width, vocabulary), the scheduler config parses and names a
//! class we have, and every weight the configs imply is in the files with the
//! declared shape (names and shapes only; nothing is read).
//!
//! Each config was already validated on its own when the checkpoint was
//! opened (`models::config`).

use crate::checkpoint::{Checkpoint, Layout};
use crate::models::{ClipTextModel, UNet, Vae};
use crate::schedulers::{SamplerKind, SchedulerConfig};
use crate::text::tokenizer::VOCAB_SIZE;
use crate::{Error, Result};

/// What the checks found that loading needs.
#[derive(Debug, Clone)]
pub struct Checked {
    pub scheduler: SchedulerConfig,
    /// The sampler used when a request names none.
    pub default_sampler: SamplerKind,
    /// What the user should see even without `--verbose` (an unknown
    /// scheduler class, ...).
    pub warnings: Vec<String>,
}

/// Checks `ck` as described in the module documentation; one error lists
/// every weight problem of every component.
pub fn check(ck: &Checkpoint) -> Result<Checked> {
    let path = &ck.path;
    let (unet, vae, clip) = (&ck.unet.config, &ck.vae.config, &ck.text_encoder.config);
    if clip.vocab_size < VOCAB_SIZE {
        return Err(Error::Unsupported(format!(
            "{}: the text encoder has {} token embeddings, the CLIP tokenizer needs {VOCAB_SIZE}",
            path.display(),
            clip.vocab_size
        )));
    }
    if unet.cross_attention_dim != clip.hidden_size {
        return Err(Error::Unsupported(format!(
            "{}: the UNet attends to {}-wide text states (cross_attention_dim) but the text \
             encoder is {} wide (hidden_size)",
            path.display(),
            unet.cross_attention_dim,
            clip.hidden_size
        )));
    }
    // An inpainting UNet also takes the mask (1 channel) and the masked image's latents.
    let z = vae.latent_channels;
    if ![z, 2 * z + 1].contains(&unet.in_channels) || unet.out_channels != z {
        return Err(Error::Unsupported(format!(
            "{}: the UNet maps {} to {} latent channels (in_channels, out_channels) but the VAE \
             has {z} (latent_channels); the UNet must map {z} (or {} for inpainting: latents, mask, \
             masked image) to {z}",
            path.display(),
            unet.in_channels,
            unet.out_channels,
            2 * z + 1
        )));
    }
    let mut warnings = Vec::new();
    let (scheduler, default_sampler) = match &ck.scheduler_config {
        Some(json) => {
            let origin = path.join("scheduler/scheduler_config.json");
            let config = SchedulerConfig::from_value(json, &origin)?;
            let class = json.get("_class_name").and_then(|c| c.as_str()).unwrap_or("");
            let kind = sampler_for_class(class, &config).unwrap_or_else(|| {
                warnings.push(format!(
                    "{}: scheduler class {class:?} has no sd-wgpu equivalent; the default sampler \
                     is pndm (choose one with --sampler)",
                    origin.display()
                ));
                SamplerKind::Pndm
            });
            (config, kind)
        }
        None => (SchedulerConfig::default(), SamplerKind::Pndm),
    };
    let problems: Vec<String> = [
        ClipTextModel::check(ck.text_encoder.weights.clone(), clip),
        UNet::check(ck.unet.weights.clone(), unet),
        Vae::check(ck.vae.weights.clone(), vae),
    ]
    .into_iter()
    .filter_map(|r| r.err().map(|e| e.to_string()))
    .collect();
    if !problems.is_empty() {
        return Err(Error::Weights(with_configs(ck.layout, &problems)));
    }
    Ok(Checked {
        scheduler,
        default_sampler,
        warnings,
    })
}

/// The weight problems, and where the sizes they were compared with came from.
fn with_configs(layout: Layout, problems: &[String]) -> String {
    let origin = match layout {
        Layout::DiffusersFolder => "the component config.json files",
        Layout::SingleFile => "the SD 1.5 configs (a single file carries none)",
    };
    format!(
        "{}\n  (expected shapes follow from {origin})",
        problems.join("\n")
    )
}

/// The sampler diffusers would build from a scheduler config of class `class`.
fn sampler_for_class(class: &str, config: &SchedulerConfig) -> Option<SamplerKind> {
    Some(match class {
        "PNDMScheduler" => SamplerKind::Pndm,
        "DDIMScheduler" => SamplerKind::Ddim,
        "EulerDiscreteScheduler" => SamplerKind::Euler,
        "EulerAncestralDiscreteScheduler" => SamplerKind::EulerAncestral,
        "DPMSolverMultistepScheduler" if config.use_karras_sigmas => SamplerKind::DpmPp2mKarras,
        "DPMSolverMultistepScheduler" => SamplerKind::DpmPp2m,
        "LMSDiscreteScheduler" => SamplerKind::Lms,
        "HeunDiscreteScheduler" => SamplerKind::Heun,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_from_scheduler_class() {
        let c = SchedulerConfig::default();
        assert_eq!(sampler_for_class("PNDMScheduler", &c), Some(SamplerKind::Pndm));
        let karras = SchedulerConfig {
            use_karras_sigmas: true,
            ..c.clone()
        };
        assert_eq!(
            sampler_for_class("DPMSolverMultistepScheduler", &karras),
            Some(SamplerKind::DpmPp2mKarras)
        );
        assert_eq!(sampler_for_class("FlowMatchEulerDiscreteScheduler", &c), None);
    }
}
