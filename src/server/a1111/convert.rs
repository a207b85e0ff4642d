//! From an A1111 request to our [`Request`], and from the finished images back to A1111's
//! `info`: the rules of A1111's `processing.py` that decide what gets generated (sampler
//! from `sampler_name` or `sampler_index`, seed -1 random, `batch_size` x `n_iter` images
//! with seeds `seed, seed + 1, ...`), and the refusal of every field we cannot honour.

use serde_json::{Map, Value};

use crate::pipeline::{GenerationInfo, Request, TextualInversion};
use crate::schedulers::SamplerKind;

use super::schema::{GenerationRequest, Info, Kind};
use crate::server::error::ApiError;
use crate::server::input;

/// What the loaded model tells a conversion.
pub struct Model<'a> {
    pub name: &'a str,
    /// A1111's short hash (10 hex digits), when known.
    pub hash: Option<&'a str>,
    /// The native size: the size when the request gives none.
    pub default_size: (usize, usize),
    /// Every loaded embedding: A1111 applies whichever the prompts name.
    pub embeddings: Vec<TextualInversion>,
    /// The VAE replacing the model's (`serve --vae`): its name.
    pub vae: Option<&'a str>,
}

/// The `override_settings` keys we honour, and the values we accept for them.
const SETTINGS: &str = "sd_model_checkpoint (the loaded model), CLIP_stop_at_last_layers, \
                        sd_vae (\"Automatic\", \"None\" or the --vae VAE's name), eta_noise_seed_delta (0), \
                        samples_format (\"png\")";

/// A1111's request as our [`Request`] (seed -1: a random one). Every field we cannot
/// honour is refused first, all of them named in one 422.
pub fn to_request(req: &GenerationRequest, kind: Kind, model: &Model) -> Result<Request, ApiError> {
    let sampler = sampler(req)?;
    let clip_skip = settings(req, model)?;
    let refused = unsupported(req, kind, sampler);
    if let Some((field, _)) = refused.first() {
        let list: Vec<String> = refused.iter().map(|(f, why)| format!("{f} ({why})")).collect();
        return Err(ApiError::field(
            field.clone(),
            format!(
                "sd-wgpu cannot honour {}: leave {} out or at A1111's default",
                list.join(", "),
                if refused.len() == 1 { "it" } else { "them" }
            ),
        ));
    }
    let seed = input::seed("seed", Some(req.seed.into()))?;
    let batch = (req.batch_size as usize)
        .checked_mul(req.n_iter as usize)
        .ok_or_else(|| ApiError::field("n_iter", "batch_size x n_iter is too large"))?;
    let request = Request {
        prompt: req.prompt.clone(),
        negative_prompt: req.negative_prompt.clone(),
        steps: req.steps as usize,
        cfg_scale: req.cfg_scale as f32,
        sampler: Some(sampler),
        seed,
        width: Some(req.width.map_or(model.default_size.0, |w| w as usize)),
        height: Some(req.height.map_or(model.default_size.1, |h| h as usize)),
        batch,
        clip_skip,
        strength: req.denoising_strength,
        embeddings: model.embeddings.clone(),
    };
    let checked = match kind {
        Kind::Txt2Img => request.check(),
        Kind::Img2Img => request.check_img2img().map(|_| ()),
    };
    checked.map_err(|e| rename(ApiError::from(e)))?;
    Ok(request)
}

/// Our request fields under A1111's names (errors from the library and the worker name ours).
/// Our `batch` is A1111's `batch_size` x `n_iter`: a limit on it names `batch_size`.
pub fn rename(e: ApiError) -> ApiError {
    e.rename_field("batch", "batch_size")
        .rename_field("strength", "denoising_strength")
        .rename_field("sampler", "sampler_name")
        .rename_field("clip_skip", "override_settings.CLIP_stop_at_last_layers")
        .rename_field("init_image", "init_images")
        .rename_field("concepts", "prompt")
}

/// The sampler: `sampler_name`, else `sampler_index` (A1111's default "Euler"), in A1111's
/// spelling or ours, with A1111 1.9's separate `scheduler` ("Automatic" or "Karras").
pub fn sampler(req: &GenerationRequest) -> Result<SamplerKind, ApiError> {
    let (field, name) = match req.sampler_name.as_deref() {
        Some(name) if !name.is_empty() => ("sampler_name", name),
        _ => ("sampler_index", req.sampler_index.as_str()),
    };
    let kind: SamplerKind = name
        .parse()
        .map_err(|e| ApiError::from(e).rename_field("sampler", field))?;
    let scheduler = req.scheduler.as_deref().unwrap_or("").to_ascii_lowercase();
    match (scheduler.as_str(), kind) {
        ("" | "automatic", kind) => Ok(kind),
        ("karras", SamplerKind::DpmPp2m | SamplerKind::DpmPp2mKarras) => Ok(SamplerKind::DpmPp2mKarras),
        _ => Err(ApiError::field(
            "scheduler",
            format!(
                "expected \"Automatic\" (each sampler's own schedule), or \"Karras\" with \
                 DPM++ 2M; found {:?} with {:?}",
                req.scheduler.as_deref().unwrap_or(""),
                kind.a1111_name()
            ),
        )),
    }
}

/// `override_settings`: the clip skip it sets (1 when none); any other key but the few
/// that agree with what we do is refused, naming it.
fn settings(req: &GenerationRequest, model: &Model) -> Result<usize, ApiError> {
    let mut clip_skip = 1;
    let Some(settings) = &req.override_settings else {
        return Ok(clip_skip);
    };
    for (key, value) in settings {
        let field = format!("override_settings.{key}");
        let refuse = |what: &str| {
            Err(ApiError::field(
                field.clone(),
                format!("{what}, found {value}; the settings sd-wgpu accepts are {SETTINGS}"),
            ))
        };
        match (key.as_str(), value) {
            ("sd_model_checkpoint", Value::String(name)) if names_model(name, model) => {}
            ("sd_model_checkpoint", _) => {
                return refuse(&format!("expected the loaded model {:?}", title(model)))
            }
            ("CLIP_stop_at_last_layers", v) => match v.as_u64() {
                Some(n) if n >= 1 => clip_skip = n as usize,
                _ => return refuse("expected a whole number from 1"),
            },
            ("sd_vae", Value::String(v)) if names_vae(v, model) => {}
            ("eta_noise_seed_delta", v) if v.as_f64() == Some(0.0) => {}
            ("samples_format", Value::String(v)) if v.eq_ignore_ascii_case("png") => {}
            _ => return refuse("a setting or value sd-wgpu does not support"),
        }
    }
    Ok(clip_skip)
}

/// Whether an `sd_vae` setting agrees with what runs: `Automatic` and `None` (A1111
/// ignores the setting when started with a VAE, as `serve --vae` is), or the loaded VAE's name.
pub fn names_vae(value: &str, model: &Model) -> bool {
    value == "Automatic" || value == "None" || Some(value) == model.vae
}

/// A1111's checkpoint title: `name [hash]`.
pub fn title(model: &Model) -> String {
    match model.hash {
        Some(h) => format!("{} [{h}]", model.name),
        None => model.name.to_string(),
    }
}

/// Whether `name` (a title, a file name, a model name or a hash) names the loaded model.
pub fn names_model(name: &str, model: &Model) -> bool {
    let name = name.trim();
    let stem = [".safetensors", ".ckpt"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .unwrap_or(name);
    let without_hash = match stem.rsplit_once(" [") {
        Some((base, rest)) if rest.ends_with(']') => base,
        _ => stem,
    };
    let without_hash = [".safetensors", ".ckpt"]
        .iter()
        .find_map(|ext| without_hash.strip_suffix(ext))
        .unwrap_or(without_hash);
    name == title(model) || without_hash == model.name || Some(name) == model.hash
}

/// `(field, why)` for each field set to something we cannot do. Fields of the other route
/// are ignored, as A1111 ignores them.
pub fn unsupported(req: &GenerationRequest, kind: Kind, sampler: SamplerKind) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut refuse = |field: &str, set: bool, why: &str| {
        if set {
            out.push((field.to_string(), why.to_string()));
        }
    };
    let given = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty() && s != "None");
    let not = |v: Option<f64>, default: f64| v.is_some_and(|v| v != default);
    refuse(
        "styles",
        req.styles.as_ref().is_some_and(|s| !s.is_empty()),
        "no prompt styles are stored here",
    );
    refuse("subseed_strength", req.subseed_strength != 0.0, "variation seeds");
    refuse(
        "seed_resize_from_w",
        req.seed_resize_from_w > 0,
        "resizing the seed's noise",
    );
    refuse(
        "seed_resize_from_h",
        req.seed_resize_from_h > 0,
        "resizing the seed's noise",
    );
    refuse(
        "restore_faces",
        req.restore_faces == Some(true),
        "face restoration",
    );
    refuse("tiling", req.tiling == Some(true), "tiling");
    // Euler a runs with eta 1 and DDIM with 0, A1111's defaults; the other samplers ignore it.
    let eta = match sampler {
        SamplerKind::EulerAncestral => not(req.eta, 1.0),
        SamplerKind::Ddim => not(req.eta, 0.0),
        _ => false,
    };
    refuse("eta", eta, "only the sampler's own eta (Euler a: 1, DDIM: 0)");
    refuse(
        "s_min_uncond",
        not(req.s_min_uncond, 0.0),
        "negative guidance minimum sigma",
    );
    refuse("s_churn", not(req.s_churn, 0.0), "sigma churn");
    refuse("s_tmin", not(req.s_tmin, 0.0), "sigma tmin");
    refuse(
        "s_tmax",
        req.s_tmax.is_some_and(|v| v != 0.0 && v.is_finite()),
        "sigma tmax",
    );
    refuse("s_noise", not(req.s_noise, 1.0), "sigma noise");
    refuse(
        "refiner_checkpoint",
        given(&req.refiner_checkpoint),
        "refiner models",
    );
    refuse("script_name", given(&req.script_name), "scripts");
    refuse(
        "alwayson_scripts",
        !req.alwayson_scripts.is_empty(),
        "extension scripts",
    );
    refuse("infotext", given(&req.infotext), "settings from an infotext");
    match kind {
        Kind::Txt2Img => {
            refuse("enable_hr", req.enable_hr, "hires fix");
            refuse("firstphase_width", req.firstphase_width != 0, "hires fix");
            refuse("firstphase_height", req.firstphase_height != 0, "hires fix");
            refuse("firstpass_image", given(&req.firstpass_image), "hires fix");
        }
        Kind::Img2Img => {
            refuse(
                "resize_mode",
                req.resize_mode != 0,
                "only 0, \"Just resize\" (Lanczos to width x height)",
            );
            if given(&req.mask) {
                inpainting_unsupported(req, &mut refuse);
            }
            refuse("latent_mask", given(&req.latent_mask), "a separate latent mask");
            refuse(
                "initial_noise_multiplier",
                not(req.initial_noise_multiplier, 1.0),
                "a noise multiplier",
            );
            refuse(
                "init_images",
                req.init_images.as_ref().is_some_and(|v| v.len() > 1),
                "one init image per request",
            );
        }
    }
    out
}

/// The inpainting settings we cannot honour. What we do is diffusers' inpainting of the whole
/// picture: `inpaint_full_res` false ("Whole picture"), the mask rounded at latent size
/// (`mask_round`), the masked area started from the image ("original", `inpainting_fill` 1;
/// at denoising strength 1 it starts from pure noise whatever the fill), one blur radius, and
/// no paste back through the soft mask.
fn inpainting_unsupported(req: &GenerationRequest, refuse: &mut impl FnMut(&str, bool, &str)) {
    refuse(
        "inpaint_full_res",
        req.inpaint_full_res,
        "\"Only masked\" inpainting (a crop around the mask): send false, \"Whole picture\"",
    );
    refuse(
        "inpainting_fill",
        req.inpainting_fill != 1 && req.denoising_strength < 1.0,
        "only 1, \"original\", below denoising_strength 1",
    );
    refuse("mask_round", !req.mask_round, "a soft latent mask");
    refuse(
        "mask_blur_y",
        req.mask_blur.is_none() && req.mask_blur_x != req.mask_blur_y,
        "a blur other than mask_blur_x's: one radius for both directions",
    );
}

/// The mask blur A1111 applies: `mask_blur` when given (it sets both directions), else
/// `mask_blur_x` (`inpainting_unsupported` refuses a different `mask_blur_y`).
pub fn mask_blur(req: &GenerationRequest) -> Result<usize, ApiError> {
    let (field, blur) = match req.mask_blur {
        Some(b) => ("mask_blur", b),
        None => ("mask_blur_x", req.mask_blur_x),
    };
    usize::try_from(blur).map_err(|_| ApiError::field(field, format!("must be 0 or more, found {blur}")))
}

/// The finished (or interrupted) generation's `info`, as A1111's `Processed.js()`.
/// `images` are the images made, in order; `all_seeds` covers the whole request.
pub fn info(
    req: &GenerationRequest,
    request: &Request,
    model: &Model,
    images: &[(&GenerationInfo, &str)],
    job_timestamp: String,
) -> Info {
    let n = request.batch;
    let all_seeds: Vec<u64> = (0..n).map(|i| request.seed_of(i)).collect();
    let first = images.first().map(|(g, _)| *g);
    let (width, height) = first.map_or(
        (
            request.width.unwrap_or(model.default_size.0),
            request.height.unwrap_or(model.default_size.1),
        ),
        |g| (g.width, g.height),
    );
    let sampler = request.sampler.unwrap_or(SamplerKind::Euler);
    let mut extra = Map::new();
    if let (_, Some(schedule)) = sampler.a1111_parameters() {
        extra.insert("Schedule type".into(), schedule.into());
    }
    if let Some(blur) = first.and_then(|g| g.mask_blur) {
        extra.insert("Mask blur".into(), blur.into());
    }
    Info {
        prompt: request.prompt.clone(),
        all_prompts: vec![request.prompt.clone(); n],
        negative_prompt: request.negative_prompt.clone(),
        all_negative_prompts: vec![request.negative_prompt.clone(); n],
        seed: request.seed,
        all_seeds,
        subseed: req.subseed,
        all_subseeds: vec![req.subseed; n],
        subseed_strength: req.subseed_strength,
        width,
        height,
        sampler_name: sampler.a1111_name().into(),
        cfg_scale: req.cfg_scale,
        steps: request.steps,
        batch_size: req.batch_size,
        restore_faces: false,
        face_restoration_model: None,
        sd_model_name: model.name.into(),
        sd_model_hash: model.hash.map(str::to_string),
        sd_vae_name: first.and_then(|g| g.vae_name.clone()),
        sd_vae_hash: first.and_then(|g| g.vae_hash.clone()),
        seed_resize_from_w: req.seed_resize_from_w,
        seed_resize_from_h: req.seed_resize_from_h,
        denoising_strength: req.denoising_strength,
        extra_generation_params: extra,
        index_of_first_image: 0,
        infotexts: images.iter().map(|(_, t)| t.to_string()).collect(),
        styles: req.styles.clone().unwrap_or_default(),
        job_timestamp,
        clip_skip: request.clip_skip,
        is_using_inpainting_conditioning: first.is_some_and(|g| g.inpainting_conditioning),
        version: format!("sd-wgpu {}", env!("CARGO_PKG_VERSION")),
    }
}

/// A1111's `job_timestamp`: `YYYYMMDDhhmmss` (UTC here; A1111 writes its local time).
pub fn job_timestamp(t: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model() -> Model<'static> {
        Model {
            name: "v1-5-pruned-emaonly",
            hash: Some("6ce0161689"),
            default_size: (512, 512),
            embeddings: Vec::new(),
            vae: Some("vae-ft-mse-840000-ema-pruned.safetensors"),
        }
    }

    fn request(body: Value) -> GenerationRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn a1111_defaults_become_our_request() {
        let r = to_request(
            &request(json!({"prompt": "a fox", "seed": 5})),
            Kind::Txt2Img,
            &model(),
        )
        .unwrap();
        assert_eq!((r.steps, r.cfg_scale, r.seed, r.batch), (50, 7.0, 5, 1));
        assert_eq!(
            r.sampler,
            Some(SamplerKind::Euler),
            "A1111's sampler_index default"
        );
        assert_eq!((r.width, r.height), (Some(512), Some(512)));
        let r = to_request(
            &request(
                json!({"batch_size": 2, "n_iter": 3, "width": 64, "height": 96, "seed": -1,
                            "override_settings": {"CLIP_stop_at_last_layers": 2}}),
            ),
            Kind::Txt2Img,
            &model(),
        )
        .unwrap();
        assert_eq!(
            (r.batch, r.width, r.height, r.clip_skip),
            (6, Some(64), Some(96), 2)
        );
        assert!(r.seed < 1 << 32, "A1111's random seeds are 32-bit");
    }

    #[test]
    fn samplers_by_any_name_and_schedule() {
        let s = |body: Value| sampler(&request(body));
        assert_eq!(s(json!({})).unwrap(), SamplerKind::Euler);
        assert_eq!(
            s(json!({"sampler_name": "Euler a"})).unwrap(),
            SamplerKind::EulerAncestral
        );
        assert_eq!(
            s(json!({"sampler_name": "", "sampler_index": "DDIM"})).unwrap(),
            SamplerKind::Ddim
        );
        let karras = json!({"sampler_name": "DPM++ 2M", "scheduler": "Karras"});
        assert_eq!(s(karras).unwrap(), SamplerKind::DpmPp2mKarras);
        assert_eq!(
            s(json!({"sampler_name": "dpm++2m", "scheduler": "automatic"})).unwrap(),
            SamplerKind::DpmPp2m
        );
        let e = s(json!({"sampler_name": "Euler", "scheduler": "Karras"})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("scheduler"));
        assert!(
            e.message.contains("Karras") && e.message.contains("\"Euler\""),
            "{}",
            e.message
        );
        let e = s(json!({"sampler_index": "UniPC"})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("sampler_index"));
    }

    #[test]
    fn every_unhonourable_field_is_named() {
        let body = json!({"enable_hr": true, "tiling": true, "mask": "x", "s_noise": 1.0, "s_churn": 0.5});
        let refused = unsupported(&request(body.clone()), Kind::Txt2Img, SamplerKind::Euler);
        let fields: Vec<&str> = refused.iter().map(|(f, _)| f.as_str()).collect();
        // `mask` is img2img's: txt2img ignores it, as A1111 does; s_noise 1 is the default.
        assert_eq!(fields, ["tiling", "s_churn", "enable_hr"]);
        let e = to_request(&request(body), Kind::Txt2Img, &model()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("tiling"));
        assert!(
            e.message.contains("enable_hr (hires fix)") && e.message.contains("them"),
            "{}",
            e.message
        );
        let refused = unsupported(
            &request(json!({"mask": "x", "enable_hr": true})),
            Kind::Img2Img,
            SamplerKind::Euler,
        );
        // A mask is inpainting, of the whole picture only (A1111's default is "only masked"),
        // starting from the image under the mask (A1111's default fill is "fill").
        let fields: Vec<&str> = refused.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["inpaint_full_res", "inpainting_fill"]);
        // Each sampler's own eta is its default; other samplers ignore eta, as in A1111.
        let eta = |eta: f64, kind| unsupported(&request(json!({"eta": eta})), Kind::Txt2Img, kind).len();
        assert_eq!(eta(1.0, SamplerKind::EulerAncestral), 0);
        assert_eq!(eta(0.0, SamplerKind::EulerAncestral), 1);
        assert_eq!(eta(0.0, SamplerKind::Ddim), 0);
        assert_eq!(eta(0.3, SamplerKind::DpmPp2m), 0);
    }

    #[test]
    fn settings_that_change_nothing_are_accepted() {
        let m = model();
        for name in [
            "v1-5-pruned-emaonly.safetensors [6ce0161689]",
            "v1-5-pruned-emaonly",
            "v1-5-pruned-emaonly.ckpt",
            "6ce0161689",
        ] {
            assert!(names_model(name, &m), "{name}");
        }
        for name in ["v2-1_768.safetensors", "v1-5-pruned-emaonly [0000000000]x", ""] {
            assert!(!names_model(name, &m), "{name}");
        }
        let vae = json!({"override_settings": {"sd_vae": "vae-ft-mse-840000-ema-pruned.safetensors"}});
        assert!(to_request(&request(vae), Kind::Txt2Img, &m).is_ok());
        let settings = json!({"override_settings": {"sd_vae": "Automatic", "eta_noise_seed_delta": 0,
                                                    "sd_model_checkpoint": "v1-5-pruned-emaonly"}});
        assert!(to_request(&request(settings), Kind::Txt2Img, &m).is_ok());
        let e = to_request(
            &request(json!({"override_settings": {"CLIP_stop_at_last_layers": 0}})),
            Kind::Txt2Img,
            &m,
        )
        .unwrap_err();
        assert_eq!(
            e.field.as_deref(),
            Some("override_settings.CLIP_stop_at_last_layers")
        );
        let e = to_request(
            &request(json!({"override_settings": {"sd_vae": "vae-ft-mse.pt"}})),
            Kind::Txt2Img,
            &m,
        )
        .unwrap_err();
        assert!(
            e.message.contains("vae-ft-mse.pt") && e.message.contains("CLIP_stop_at_last_layers"),
            "{}",
            e.message
        );
    }

    #[test]
    fn library_errors_get_a1111_names() {
        let e = to_request(
            &request(json!({"denoising_strength": 2.0})),
            Kind::Img2Img,
            &model(),
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("denoising_strength"));
        let e = to_request(&request(json!({"batch_size": 0})), Kind::Txt2Img, &model()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("batch_size"));
        let e = to_request(&request(json!({"cfg_scale": 1000})), Kind::Txt2Img, &model()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("cfg_scale"));
    }

    #[test]
    fn timestamps_as_a1111_writes_them() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_764_686_096);
        assert_eq!(job_timestamp(t), "20251202143456");
    }
}
