//! The JSON A1111 clients send and receive, field for field as A1111's
//! `modules/api/models.py` builds it from its processing classes
//! (`StableDiffusionProcessingTxt2Img` / `...Img2Img` plus the API's extra keys).
//!
//! One struct serves both txt2img and img2img, so that a type error anywhere names its
//! field (serde's `flatten` would lose the name): [`Kind`] says which of the fields belong
//! to the route, and [`GenerationRequest::parameters`] echoes only those, as A1111 does.
//! Unknown fields are ignored (A1111's models allow extra keys); the fields we cannot honour
//! are listed by `convert::unsupported`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Which route a [`GenerationRequest`] came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Txt2Img,
    Img2Img,
}

/// `POST /sdapi/v1/txt2img` and `/img2img`. Defaults are A1111's, except `width` and
/// `height`: absent, they are the loaded model's native size (512 for SD 1.x, A1111's value).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct GenerationRequest {
    // StableDiffusionProcessing (both routes).
    pub prompt: String,
    pub negative_prompt: String,
    pub styles: Option<Vec<String>>,
    pub seed: i64,
    pub subseed: i64,
    pub subseed_strength: f64,
    pub seed_resize_from_h: i64,
    pub seed_resize_from_w: i64,
    pub sampler_name: Option<String>,
    /// A1111 1.9+: the noise schedule as its own field ("Automatic", "Karras", ...).
    pub scheduler: Option<String>,
    pub batch_size: u32,
    pub n_iter: u32,
    pub steps: u32,
    pub cfg_scale: f64,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub restore_faces: Option<bool>,
    pub tiling: Option<bool>,
    pub do_not_save_samples: bool,
    pub do_not_save_grid: bool,
    pub eta: Option<f64>,
    pub denoising_strength: f64,
    pub s_min_uncond: Option<f64>,
    pub s_churn: Option<f64>,
    pub s_tmax: Option<f64>,
    pub s_tmin: Option<f64>,
    pub s_noise: Option<f64>,
    pub override_settings: Option<Map<String, Value>>,
    pub override_settings_restore_afterwards: bool,
    pub refiner_checkpoint: Option<String>,
    pub refiner_switch_at: Option<f64>,
    pub disable_extra_networks: bool,
    pub comments: Option<Map<String, Value>>,
    // The API's own keys (models.py `additional_fields`).
    pub sampler_index: String,
    pub script_name: Option<String>,
    pub script_args: Vec<Value>,
    pub send_images: bool,
    pub save_images: bool,
    pub alwayson_scripts: Map<String, Value>,
    pub force_task_id: Option<String>,
    pub infotext: Option<String>,
    // StableDiffusionProcessingTxt2Img.
    pub enable_hr: bool,
    pub firstphase_width: u32,
    pub firstphase_height: u32,
    pub hr_scale: f64,
    pub hr_upscaler: Option<String>,
    pub hr_second_pass_steps: u32,
    pub hr_resize_x: u32,
    pub hr_resize_y: u32,
    pub hr_checkpoint_name: Option<String>,
    pub hr_sampler_name: Option<String>,
    pub hr_scheduler: Option<String>,
    pub hr_prompt: String,
    pub hr_negative_prompt: String,
    pub firstpass_image: Option<String>,
    // StableDiffusionProcessingImg2Img.
    pub init_images: Option<Vec<String>>,
    pub resize_mode: i64,
    pub image_cfg_scale: Option<f64>,
    pub mask: Option<String>,
    pub mask_blur_x: i64,
    pub mask_blur_y: i64,
    pub mask_blur: Option<i64>,
    pub mask_round: bool,
    pub inpainting_fill: i64,
    pub inpaint_full_res: bool,
    pub inpaint_full_res_padding: i64,
    pub inpainting_mask_invert: i64,
    pub initial_noise_multiplier: Option<f64>,
    pub latent_mask: Option<String>,
    pub include_init_images: bool,
}

impl Default for GenerationRequest {
    /// A1111's defaults (processing.py's dataclasses and models.py's extra keys).
    fn default() -> Self {
        GenerationRequest {
            prompt: String::new(),
            negative_prompt: String::new(),
            styles: None,
            seed: -1,
            subseed: -1,
            subseed_strength: 0.0,
            seed_resize_from_h: -1,
            seed_resize_from_w: -1,
            sampler_name: None,
            scheduler: None,
            batch_size: 1,
            n_iter: 1,
            steps: 50,
            cfg_scale: 7.0,
            width: None,
            height: None,
            restore_faces: None,
            tiling: None,
            do_not_save_samples: false,
            do_not_save_grid: false,
            eta: None,
            denoising_strength: 0.75,
            s_min_uncond: None,
            s_churn: None,
            s_tmax: None,
            s_tmin: None,
            s_noise: None,
            override_settings: None,
            override_settings_restore_afterwards: true,
            refiner_checkpoint: None,
            refiner_switch_at: None,
            disable_extra_networks: false,
            comments: None,
            sampler_index: "Euler".into(),
            script_name: None,
            script_args: Vec::new(),
            send_images: true,
            save_images: false,
            alwayson_scripts: Map::new(),
            force_task_id: None,
            infotext: None,
            enable_hr: false,
            firstphase_width: 0,
            firstphase_height: 0,
            hr_scale: 2.0,
            hr_upscaler: None,
            hr_second_pass_steps: 0,
            hr_resize_x: 0,
            hr_resize_y: 0,
            hr_checkpoint_name: None,
            hr_sampler_name: None,
            hr_scheduler: None,
            hr_prompt: String::new(),
            hr_negative_prompt: String::new(),
            firstpass_image: None,
            init_images: None,
            resize_mode: 0,
            image_cfg_scale: None,
            mask: None,
            mask_blur_x: 4,
            mask_blur_y: 4,
            mask_blur: None,
            mask_round: true,
            inpainting_fill: 0,
            inpaint_full_res: true,
            inpaint_full_res_padding: 0,
            inpainting_mask_invert: 0,
            initial_noise_multiplier: None,
            latent_mask: None,
            include_init_images: false,
        }
    }
}

/// The fields only txt2img has.
const TXT2IMG_ONLY: &[&str] = &[
    "enable_hr",
    "firstphase_width",
    "firstphase_height",
    "hr_scale",
    "hr_upscaler",
    "hr_second_pass_steps",
    "hr_resize_x",
    "hr_resize_y",
    "hr_checkpoint_name",
    "hr_sampler_name",
    "hr_scheduler",
    "hr_prompt",
    "hr_negative_prompt",
    "firstpass_image",
];

/// The fields only img2img has.
const IMG2IMG_ONLY: &[&str] = &[
    "init_images",
    "resize_mode",
    "image_cfg_scale",
    "mask",
    "mask_blur_x",
    "mask_blur_y",
    "mask_blur",
    "mask_round",
    "inpainting_fill",
    "inpaint_full_res",
    "inpaint_full_res_padding",
    "inpainting_mask_invert",
    "initial_noise_multiplier",
    "latent_mask",
    "include_init_images",
];

impl GenerationRequest {
    /// The response's `parameters`: the request as A1111 echoes it (every field of the route,
    /// defaults filled in; img2img's `init_images` and `mask` nulled unless
    /// `include_init_images`).
    pub fn parameters(&self, kind: Kind) -> Value {
        let mut map = match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            // A struct of strings, numbers and JSON values always serializes to an object.
            _ => Map::new(),
        };
        let (other, own) = match kind {
            Kind::Txt2Img => (IMG2IMG_ONLY, TXT2IMG_ONLY),
            Kind::Img2Img => (TXT2IMG_ONLY, IMG2IMG_ONLY),
        };
        debug_assert!(own.iter().all(|k| map.contains_key(*k)));
        for key in other {
            map.remove(*key);
        }
        if kind == Kind::Img2Img {
            map.remove("include_init_images");
            if !self.include_init_images {
                map.insert("init_images".into(), Value::Null);
                map.insert("mask".into(), Value::Null);
            }
        }
        Value::Object(map)
    }
}

/// The response of txt2img and img2img (A1111's `TextToImageResponse`).
#[derive(Debug, Serialize)]
pub struct GenerationResponse {
    /// Base64 PNGs, each the bytes the CLI writes for the same settings.
    pub images: Vec<String>,
    pub parameters: Value,
    /// [`Info`] as a JSON string, as A1111 sends it.
    pub info: String,
}

/// What A1111's `Processed.js()` reports about a finished generation.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Info {
    pub prompt: String,
    pub all_prompts: Vec<String>,
    pub negative_prompt: String,
    pub all_negative_prompts: Vec<String>,
    pub seed: u64,
    pub all_seeds: Vec<u64>,
    pub subseed: i64,
    pub all_subseeds: Vec<i64>,
    pub subseed_strength: f64,
    pub width: usize,
    pub height: usize,
    pub sampler_name: String,
    pub cfg_scale: f64,
    pub steps: usize,
    pub batch_size: u32,
    pub restore_faces: bool,
    pub face_restoration_model: Option<String>,
    pub sd_model_name: String,
    pub sd_model_hash: Option<String>,
    pub sd_vae_name: Option<String>,
    pub sd_vae_hash: Option<String>,
    pub seed_resize_from_w: i64,
    pub seed_resize_from_h: i64,
    pub denoising_strength: f64,
    pub extra_generation_params: Map<String, Value>,
    pub index_of_first_image: usize,
    pub infotexts: Vec<String>,
    pub styles: Vec<String>,
    /// `YYYYMMDDhhmmss` of the job's start (UTC).
    pub job_timestamp: String,
    pub clip_skip: usize,
    pub is_using_inpainting_conditioning: bool,
    pub version: String,
}

/// `GET /sdapi/v1/progress`'s query (`?skip_current_image=true`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ProgressQuery {
    pub skip_current_image: bool,
}

/// `GET /sdapi/v1/progress` (A1111's `ProgressResponse`).
#[derive(Debug, Serialize)]
pub struct ProgressResponse {
    /// 0 to 1 over the whole running job.
    pub progress: f64,
    /// Seconds left (A1111's name).
    pub eta_relative: f64,
    pub state: ProgressState,
    /// Base64 PNG of the latest preview, `null` when none (or skipped).
    pub current_image: Option<String>,
    pub textinfo: Option<String>,
}

/// A1111's `shared.state.dict()`.
#[derive(Debug, Serialize)]
pub struct ProgressState {
    pub skipped: bool,
    pub interrupted: bool,
    pub stopping_generation: bool,
    pub job: String,
    /// Images of the running job (A1111 counts batches; ours run one image at a time).
    pub job_count: usize,
    pub job_timestamp: String,
    /// The image being generated, from 0.
    pub job_no: usize,
    pub sampling_step: usize,
    pub sampling_steps: usize,
}

/// One entry of `GET /sdapi/v1/samplers`.
#[derive(Debug, Serialize)]
pub struct SamplerItem {
    pub name: &'static str,
    pub aliases: Vec<&'static str>,
    pub options: Map<String, Value>,
}

/// One entry of `GET /sdapi/v1/schedulers` (A1111 1.9+).
#[derive(Debug, Serialize)]
pub struct SchedulerItem {
    pub name: &'static str,
    pub label: &'static str,
    pub aliases: Option<Vec<&'static str>>,
    pub default_rho: f64,
    pub need_inner_model: bool,
}

/// One entry of `GET /sdapi/v1/sd-models`. `filename` is the model's name, never a server path.
#[derive(Debug, Serialize)]
pub struct SdModelItem {
    pub title: String,
    pub model_name: String,
    pub hash: Option<String>,
    pub sha256: Option<String>,
    pub filename: String,
    pub config: Option<String>,
}

/// One entry of `GET /sdapi/v1/sd-vae`. `filename` is the VAE's name, never a server path.
#[derive(Debug, Serialize)]
pub struct SdVaeItem {
    pub model_name: String,
    pub filename: String,
}

/// One loaded embedding in `GET /sdapi/v1/embeddings`.
#[derive(Debug, Serialize)]
pub struct EmbeddingItem {
    pub step: Option<u64>,
    pub sd_checkpoint: Option<String>,
    pub sd_checkpoint_name: Option<String>,
    /// The width of each vector.
    pub shape: usize,
    pub vectors: usize,
}

/// One file of `GET /sdapi/v1/loras` (A1111's Lora extension's route).
#[derive(Debug, Serialize)]
pub struct LoraItem {
    /// What `<lora:NAME:W>` tags use: the file name without extension.
    pub name: String,
    pub alias: String,
    pub path: String,
    pub metadata: Map<String, Value>,
}

/// `GET /sdapi/v1/embeddings`.
#[derive(Debug, Serialize)]
pub struct EmbeddingsResponse {
    pub loaded: Map<String, Value>,
    pub skipped: Map<String, Value>,
}

/// `POST /sdapi/v1/png-info`.
#[derive(Debug, Deserialize)]
pub struct PngInfoRequest {
    pub image: String,
}

/// `POST /sdapi/v1/png-info`'s answer: the `parameters` text, the image's other text
/// chunks, and the text parsed into fields.
#[derive(Debug, Serialize)]
pub struct PngInfoResponse {
    pub info: String,
    pub items: Map<String, Value>,
    pub parameters: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_a1111s_and_unknown_fields_are_ignored() {
        let req: GenerationRequest =
            serde_json::from_value(json!({"prompt": "a cat", "no_such_field": [1, 2]})).unwrap();
        assert_eq!(req.prompt, "a cat");
        assert_eq!((req.steps, req.cfg_scale, req.seed), (50, 7.0, -1));
        assert_eq!((req.batch_size, req.n_iter), (1, 1));
        assert_eq!(req.sampler_index, "Euler");
        assert!(req.send_images && !req.enable_hr);
        // Clients send `null` for A1111's optional fields.
        let req: GenerationRequest =
            serde_json::from_value(json!({"styles": null, "sampler_name": null, "mask": null})).unwrap();
        assert!(req.styles.is_none() && req.sampler_name.is_none());
    }

    #[test]
    fn parameters_echo_the_routes_fields_only() {
        let req: GenerationRequest = serde_json::from_value(json!({
            "prompt": "a cat", "init_images": ["AAAA"], "enable_hr": false, "steps": 4
        }))
        .unwrap();
        let t2i = req.parameters(Kind::Txt2Img);
        assert_eq!(t2i["prompt"], "a cat");
        assert_eq!(t2i["steps"], 4);
        assert_eq!(t2i["enable_hr"], false);
        assert!(t2i.get("init_images").is_none() && t2i.get("mask_blur").is_none());
        let i2i = req.parameters(Kind::Img2Img);
        assert!(i2i.get("enable_hr").is_none());
        assert_eq!(i2i["init_images"], Value::Null);
        assert_eq!(i2i["denoising_strength"], 0.75);
        assert!(i2i.get("include_init_images").is_none());
        let kept = GenerationRequest {
            include_init_images: true,
            ..req
        }
        .parameters(Kind::Img2Img);
        assert_eq!(kept["init_images"], json!(["AAAA"]));
    }
}
