//! The generation parameters as A1111 writes them into a PNG, so that A1111,
//! ComfyUI and civitai read our images' settings.

use crate::schedulers::SamplerKind;

/// Everything that determines an image, in A1111's vocabulary. Serialisable so that a
/// cluster worker can hand it to the gateway whole (src/server/cluster/wire.rs).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GenerationInfo {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    /// Our sampler name (`euler-a`, `dpm++2m-karras`...).
    pub sampler: String,
    pub cfg_scale: f32,
    pub seed: u64,
    pub width: usize,
    pub height: usize,
    /// A1111's "AutoV2" hash: first 10 hex digits of the weights' SHA-256.
    pub model_hash: Option<String>,
    pub model_name: String,
    /// A VAE replacing the checkpoint's: its file name and A1111's hash of it
    /// (first 10 hex digits of the file's SHA-256).
    pub vae_name: Option<String>,
    pub vae_hash: Option<String>,
    /// Only written when not 1, as A1111 does.
    pub clip_skip: usize,
    /// img2img and inpainting only.
    pub denoising_strength: Option<f32>,
    /// Inpainting only: the mask's blur radius in pixels.
    pub mask_blur: Option<usize>,
    /// An inpainting UNet (mask and masked image as input) made the image: A1111 writes its
    /// `Conditional mask weight` (1.0, the weight sd-wgpu applies: the mask as given).
    pub inpainting_conditioning: bool,
    /// Textual-inversion triggers used, with their file hashes.
    pub embeddings: Vec<(String, String)>,
    /// LoRAs merged into the model, `(name, A1111 short hash)`.
    pub loras: Vec<(String, String)>,
}

/// Quotes a value the way A1111 does when it contains `,`, `:` or `"`.
fn quote(v: &str) -> String {
    if v.contains([',', ':', '"', '\n']) {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        v.to_string()
    }
}

impl GenerationInfo {
    /// The `parameters` text: prompt, `Negative prompt:` line, then
    /// `key: value` pairs on one line.
    pub fn to_a1111(&self) -> String {
        let (sampler, schedule) =
            SamplerKind::from_name(&self.sampler).map_or(("Unknown", None), |k| k.a1111_parameters());
        let mut kv: Vec<(&str, String)> =
            vec![("Steps", self.steps.to_string()), ("Sampler", sampler.into())];
        if let Some(s) = schedule {
            kv.push(("Schedule type", s.into()));
        }
        kv.push(("CFG scale", format!("{}", self.cfg_scale)));
        kv.push(("Seed", self.seed.to_string()));
        kv.push(("Size", format!("{}x{}", self.width, self.height)));
        if let Some(h) = &self.model_hash {
            kv.push(("Model hash", h.clone()));
        }
        kv.push(("Model", quote(&self.model_name)));
        if let Some(h) = &self.vae_hash {
            kv.push(("VAE hash", h.clone()));
        }
        if let Some(n) = &self.vae_name {
            kv.push(("VAE", quote(n)));
        }
        if let Some(d) = self.denoising_strength {
            kv.push(("Denoising strength", format!("{d}")));
        }
        if self.inpainting_conditioning {
            kv.push(("Conditional mask weight", "1.0".into()));
        }
        if self.clip_skip > 1 {
            kv.push(("Clip skip", self.clip_skip.to_string()));
        }
        // A1111 adds it to `extra_generation_params` when the job has a mask, before the
        // prompt's TI hashes.
        if let Some(b) = self.mask_blur {
            kv.push(("Mask blur", b.to_string()));
        }
        if !self.loras.is_empty() {
            let v: Vec<String> = self.loras.iter().map(|(n, h)| format!("{n}: {h}")).collect();
            kv.push(("Lora hashes", quote(&v.join(", "))));
        }
        if !self.embeddings.is_empty() {
            let v: Vec<String> = self.embeddings.iter().map(|(n, h)| format!("{n}: {h}")).collect();
            kv.push(("TI hashes", quote(&v.join(", "))));
        }
        kv.push(("Version", format!("sd-wgpu {}", env!("CARGO_PKG_VERSION"))));
        let line: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let mut out = self.prompt.clone();
        if !self.negative_prompt.is_empty() {
            out.push_str(&format!("\nNegative prompt: {}", self.negative_prompt));
        }
        out.push('\n');
        out.push_str(&line.join(", "));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a1111_format() {
        let info = GenerationInfo {
            prompt: "a red circle on a blue background".into(),
            negative_prompt: "blurry".into(),
            steps: 20,
            sampler: "dpm++2m-karras".into(),
            cfg_scale: 7.5,
            seed: 42,
            width: 512,
            height: 768,
            model_hash: Some("6ce0161689".into()),
            model_name: "v1-5-pruned-emaonly".into(),
            vae_name: Some("vae-ft-mse-840000-ema-pruned.safetensors".into()),
            vae_hash: Some("735e4c3a44".into()),
            clip_skip: 2,
            denoising_strength: Some(0.75),
            mask_blur: Some(4),
            inpainting_conditioning: true,
            embeddings: vec![("<teal>".into(), "abc123def0".into())],
            loras: vec![
                ("fox".into(), "0123456789ab".into()),
                ("style".into(), "ba9876543210".into()),
            ],
        };
        let v = env!("CARGO_PKG_VERSION");
        assert_eq!(
            info.to_a1111(),
            format!(
                "a red circle on a blue background\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, \
                 Schedule type: Karras, CFG scale: 7.5, Seed: 42, Size: 512x768, Model hash: 6ce0161689, \
                 Model: v1-5-pruned-emaonly, \
                 VAE hash: 735e4c3a44, VAE: vae-ft-mse-840000-ema-pruned.safetensors, Denoising strength: 0.75, \
                 Conditional mask weight: 1.0, Clip skip: 2, Mask blur: 4, \
                 Lora hashes: \"fox: 0123456789ab, style: ba9876543210\", TI hashes: \"<teal>: abc123def0\", Version: sd-wgpu {v}"
            )
        );
    }
}
