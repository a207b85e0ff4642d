//! The LoRAs of a loaded pipeline: another set rebuilds the UNet and text
//! encoder from the kept base weights (re-read, so going back to no LoRA is
//! exact), and a request's `<lora:...>` tags must name LoRAs the pipeline
//! has: a tag the weights do not reflect would be a silent lie in the image's
//! metadata.

use super::load::Pipeline;
use super::request::Request;
use crate::lora::{parse_tags, LoraSpec, Part};
use crate::models::{ClipTextModel, UNet};
use crate::{Error, Result};

impl Pipeline {
    /// The LoRAs merged into the weights, in order.
    pub fn loras(&self) -> &[LoraSpec] {
        self.loras.specs()
    }

    /// `(name, A1111 short hash)` of each LoRA, as the infotext records them.
    pub fn lora_hashes(&self) -> Vec<(String, String)> {
        self.loras.hashes()
    }

    /// Merges `specs` instead of the current LoRAs (none: the base model).
    /// Nothing changes when the set is the same; otherwise every file is
    /// opened and checked first, then both networks are loaded again (the
    /// old ones are kept until the new ones are ready, so an error leaves the
    /// pipeline as it was).
    pub fn set_loras(&mut self, specs: &[LoraSpec]) -> Result<()> {
        if self.loras.specs() == specs {
            return Ok(());
        }
        let set = self.loras.with(specs)?;
        let dtype = self.dtype();
        let device = self.device().clone();
        let text_encoder = ClipTextModel::load(
            set.source(Part::TextEncoder),
            self.text_encoder.config(),
            &device,
            dtype,
        )?;
        let unet = UNet::load(set.source(Part::Unet), self.unet.config(), &device, dtype)?;
        device.sync()?;
        self.text_encoder = text_encoder;
        self.unet = unet;
        self.loras = set;
        Ok(())
    }

    /// Every `<lora:NAME:...>` tag of the prompt is a LoRA of this pipeline
    /// at the tag's weights; the negative prompt has none.
    pub(super) fn check_lora_tags(&self, req: &Request) -> Result<()> {
        if !parse_tags(&req.negative_prompt, "--negative-prompt")?.is_empty() {
            return Err(Error::invalid(
                "--negative-prompt",
                "LoRA tags belong in the prompt",
            ));
        }
        for tag in parse_tags(&req.prompt, "--prompt")? {
            let loaded = self.loras().iter().any(|s| {
                s.name == tag.name
                    && s.unet_weight == tag.unet_weight
                    && s.text_encoder_weight == tag.text_encoder_weight
            });
            if !loaded {
                let have: Vec<String> = self
                    .loras()
                    .iter()
                    .map(|s| {
                        format!(
                            "{} (UNet {}, text encoder {})",
                            s.name, s.unet_weight, s.text_encoder_weight
                        )
                    })
                    .collect();
                return Err(Error::invalid(
                    "--prompt",
                    format!(
                        "<lora:{}> (UNet {}, text encoder {}) is not merged into this pipeline (it has: {}); \
                         load the prompt's LoRAs first (lora::specs_for_prompt, Pipeline::set_loras)",
                        tag.name,
                        tag.unet_weight,
                        tag.text_encoder_weight,
                        if have.is_empty() { "none".to_string() } else { have.join(", ") }
                    ),
                ));
            }
        }
        Ok(())
    }
}
