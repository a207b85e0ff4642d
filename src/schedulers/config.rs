//! A diffusers `scheduler_config.json`, as the samplers read it.
//!
//! diffusers builds any scheduler class from any scheduler config (`Cls.from_config(cfg)`): keys
//! the class knows are taken from the file, every other parameter keeps **that class's** default.
//! So a key absent from the file is `None` here, and each sampler resolves it with its own
//! diffusers default ([`ClassDefaults`]). SD 1.5's file, for instance, is a PNDM config without
//! `timestep_spacing`: DDIM and PNDM then space `leading`, Euler, DPM++ and friends `linspace`.
//!
//! Keys that would change the numerics in ways no sampler here implements (thresholding, zero-SNR
//! rescaling, other sigma schedules, trained betas, ...) are refused with a message naming the
//! key; keys that do not affect the samplers (`_class_name`, `_diffusers_version`, ...) and keys
//! of other schedulers are ignored, as diffusers ignores them. Keys that pick the algorithm
//! (`solver_order`, `algorithm_type`, `solver_type`) are ignored too: the sampler name does that.

use std::path::Path;

use serde_json::{Map, Value};

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BetaSchedule {
    /// `linspace(beta_start, beta_end, N)`.
    Linear,
    /// `linspace(sqrt(beta_start), sqrt(beta_end), N)^2`: Stable Diffusion's.
    ScaledLinear,
}

/// How inference timesteps are picked from the training timesteps (Table 2 of "Common Diffusion
/// Noise Schedules and Sample Steps are Flawed").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestepSpacing {
    Leading,
    Trailing,
    Linspace,
}

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    /// The noise (SD 1.x, SD 2.x base).
    Epsilon,
    /// The velocity `alpha * noise - sigma * x0` (SD 2.x 768-v models).
    VPrediction,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    pub num_train_timesteps: usize,
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    pub beta_schedule: BetaSchedule,
    pub steps_offset: usize,
    pub timestep_spacing: Option<TimestepSpacing>,
    pub prediction_type: Prediction,
    /// DDIM: final `alpha_cumprod` of 1 instead of `alphas_cumprod[0]`.
    pub set_alpha_to_one: Option<bool>,
    /// DDIM, Heun: clamp the predicted x0 to `[-clip_sample_range, clip_sample_range]`.
    pub clip_sample: Option<bool>,
    pub clip_sample_range: f64,
    /// PNDM: PLMS only (true), or the Runge-Kutta warm-up of the paper first (false).
    pub skip_prk_steps: Option<bool>,
    /// Euler, LMS, Heun, DPM++: Karras et al. (2022) sigmas, rho = 7.
    pub use_karras_sigmas: bool,
    /// DPM++: first order on the last step(s) of short schedules.
    pub lower_order_final: bool,
    /// DPM++: first order on the last step whatever the length.
    pub euler_at_final: bool,
}

/// diffusers' parameter defaults of one scheduler class, for the keys where classes disagree.
#[derive(Debug, Clone, Copy)]
pub struct ClassDefaults {
    pub beta_start: f64,
    pub beta_end: f64,
    pub timestep_spacing: TimestepSpacing,
    pub set_alpha_to_one: bool,
    pub clip_sample: bool,
    pub skip_prk_steps: bool,
}

impl ClassDefaults {
    /// The defaults most classes share (DDPM's: linear betas 1e-4..2e-2, no clipping).
    pub const COMMON: ClassDefaults = ClassDefaults {
        beta_start: 0.0001,
        beta_end: 0.02,
        timestep_spacing: TimestepSpacing::Linspace,
        set_alpha_to_one: false,
        clip_sample: false,
        skip_prk_steps: false,
    };
}

impl Default for SchedulerConfig {
    /// The SD 1.x `scheduler_config.json` on the hub (a PNDM config, no `timestep_spacing`).
    fn default() -> Self {
        SchedulerConfig {
            num_train_timesteps: 1000,
            beta_start: Some(0.00085),
            beta_end: Some(0.012),
            beta_schedule: BetaSchedule::ScaledLinear,
            steps_offset: 1,
            timestep_spacing: None,
            prediction_type: Prediction::Epsilon,
            set_alpha_to_one: Some(false),
            clip_sample: Some(false),
            clip_sample_range: 1.0,
            skip_prk_steps: Some(true),
            use_karras_sigmas: false,
            lower_order_final: true,
            euler_at_final: false,
        }
    }
}

impl SchedulerConfig {
    pub fn from_file(path: impl AsRef<Path>) -> Result<SchedulerConfig> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path.display().to_string(), e))?;
        let value: Value =
            serde_json::from_str(&text).map_err(|e| Error::bad_file(path, format!("not valid JSON: {e}")))?;
        SchedulerConfig::from_value(&value, path)
    }

    /// Parses a config already read as JSON; `origin` names it in errors.
    pub fn from_value(value: &Value, origin: impl AsRef<Path>) -> Result<SchedulerConfig> {
        let origin = origin.as_ref();
        let map = value
            .as_object()
            .ok_or_else(|| Error::bad_file(origin, "expected a JSON object of scheduler parameters"))?;
        let r = Reader { map, origin };
        r.refuse_unsupported()?;
        let config = SchedulerConfig {
            num_train_timesteps: r.usize("num_train_timesteps")?.unwrap_or(1000),
            beta_start: r.f64("beta_start")?,
            beta_end: r.f64("beta_end")?,
            beta_schedule: match r.str("beta_schedule")? {
                None | Some("linear") => BetaSchedule::Linear,
                Some("scaled_linear") => BetaSchedule::ScaledLinear,
                Some(other) => return Err(r.bad("beta_schedule", "\"linear\" or \"scaled_linear\"", other)),
            },
            steps_offset: r.usize("steps_offset")?.unwrap_or(0),
            timestep_spacing: match r.str("timestep_spacing")? {
                None => None,
                Some("leading") => Some(TimestepSpacing::Leading),
                Some("trailing") => Some(TimestepSpacing::Trailing),
                Some("linspace") => Some(TimestepSpacing::Linspace),
                Some(other) => {
                    return Err(r.bad(
                        "timestep_spacing",
                        "\"leading\", \"trailing\" or \"linspace\"",
                        other,
                    ))
                }
            },
            prediction_type: match r.str("prediction_type")? {
                None | Some("epsilon") => Prediction::Epsilon,
                Some("v_prediction") => Prediction::VPrediction,
                Some(other) => {
                    return Err(r.bad("prediction_type", "\"epsilon\" or \"v_prediction\"", other))
                }
            },
            set_alpha_to_one: r.bool("set_alpha_to_one")?,
            clip_sample: r.bool("clip_sample")?,
            clip_sample_range: r.f64("clip_sample_range")?.unwrap_or(1.0),
            skip_prk_steps: r.bool("skip_prk_steps")?,
            use_karras_sigmas: r.bool("use_karras_sigmas")?.unwrap_or(false),
            lower_order_final: r.bool("lower_order_final")?.unwrap_or(true),
            euler_at_final: r.bool("euler_at_final")?.unwrap_or(false),
        };
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &Path) -> Result<()> {
        if self.num_train_timesteps < 2 {
            return Err(Error::bad_file(
                origin,
                format!(
                    "num_train_timesteps must be at least 2, found {}",
                    self.num_train_timesteps
                ),
            ));
        }
        for (key, beta) in [("beta_start", self.beta_start), ("beta_end", self.beta_end)] {
            if let Some(b) = beta {
                if !(b > 0.0 && b < 1.0) {
                    return Err(Error::bad_file(
                        origin,
                        format!("{key} must be in (0, 1), found {b}"),
                    ));
                }
            }
        }
        if !(self.clip_sample_range > 0.0 && self.clip_sample_range.is_finite()) {
            return Err(Error::bad_file(
                origin,
                format!(
                    "clip_sample_range must be positive, found {}",
                    self.clip_sample_range
                ),
            ));
        }
        Ok(())
    }
}

/// Typed access to the keys of a config object, with errors that name the file and the key.
struct Reader<'a> {
    map: &'a Map<String, Value>,
    origin: &'a Path,
}

impl Reader<'_> {
    /// The key's value, with JSON `null` read as absent (diffusers writes `"trained_betas": null`).
    fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn bad(&self, key: &str, expected: &str, found: impl std::fmt::Display) -> Error {
        Error::bad_file(self.origin, format!("{key}: expected {expected}, found {found}"))
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| self.bad(key, "true or false", v)))
            .transpose()
    }

    fn f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| v.as_f64().ok_or_else(|| self.bad(key, "a number", v)))
            .transpose()
    }

    fn usize(&self, key: &str) -> Result<Option<usize>> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| self.bad(key, "a non-negative integer", v))
            })
            .transpose()
    }

    fn str(&self, key: &str) -> Result<Option<&str>> {
        self.get(key)
            .map(|v| v.as_str().ok_or_else(|| self.bad(key, "a string", v)))
            .transpose()
    }

    /// Keys whose non-default values change the schedule or the update in ways not implemented.
    fn refuse_unsupported(&self) -> Result<()> {
        const MUST_BE_FALSE: [&str; 6] = [
            "thresholding",
            "rescale_betas_zero_snr",
            "use_exponential_sigmas",
            "use_beta_sigmas",
            "use_lu_lambdas",
            "use_flow_sigmas",
        ];
        for key in MUST_BE_FALSE {
            if self.bool(key)? == Some(true) {
                return Err(self.bad(key, "false (not supported by sd-wgpu's samplers)", true));
            }
        }
        const MUST_BE: [(&str, &str); 3] = [
            ("final_sigmas_type", "zero"),
            ("interpolation_type", "linear"),
            ("timestep_type", "discrete"),
        ];
        for (key, only) in MUST_BE {
            match self.str(key)? {
                Some(v) if v != only => {
                    return Err(self.bad(key, &format!("\"{only}\" (the only value supported)"), v));
                }
                _ => {}
            }
        }
        // Learned variances mean a model with twice the output channels (DDPM/IF), not SD.
        if let Some(v @ ("learned" | "learned_range")) = self.str("variance_type")? {
            return Err(self.bad(
                "variance_type",
                "a fixed variance (learned variances are not supported)",
                v,
            ));
        }
        if let Some(v) = self.get("trained_betas") {
            return Err(self.bad(
                "trained_betas",
                "null (explicit beta tables are not supported)",
                v,
            ));
        }
        Ok(())
    }
}
