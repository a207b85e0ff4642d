//! Samplers (diffusers "schedulers") on host latents.
//!
//! Each sampler reproduces one diffusers scheduler class at the level of its model calls, so the
//! pipeline is one loop for all of them:
//!
//! ```text
//! let mut sampler = sd_wgpu::schedulers::from_name("euler-a", &config, steps)?;
//! let mut rng = BatchRng::new(seed, batch);
//! let mut x: Vec<f32> = rng.randn(len).iter().map(|v| v * sampler.init_noise_sigma() as f32).collect();
//! for call in 0..sampler.timesteps().len() {
//!     let input = sampler.scale_model_input(&x, call);
//!     let eps = unet(&input, sampler.timesteps()[call]);      // the float timestep diffusers passes
//!     x = sampler.step(&eps, call, &x, &mut rng);
//! }
//! ```
//!
//! Latents are flat `Vec<f32>` / `&[f32]` (`[B, C, H, W]` row-major; tiny next to the model).
//! Every update is computed per element in f64 from the f32 inputs and rounded to f32 once;
//! schedule arithmetic is f64 with diffusers' float32 tables reproduced exactly (see
//! [`schedule`]). Against diffusers, which computes in float32, samples agree to a few float32
//! roundings (tests/schedulers.rs states the bound).
//!
//! img2img: [`Sampler::start_at_strength`] applies diffusers' strength rule and drops the calls
//! `StableDiffusionImg2ImgPipeline` skips (`timesteps[t_start * order:]`, with the sampler state
//! its `set_begin_index` leaves); afterwards `timesteps()` lists only the calls still to run and
//! `add_noise(.., 0)` noises the clean latents to the first one's level.

pub mod config;
pub mod ddim;
pub mod dpm_solver;
pub mod euler;
pub mod euler_ancestral;
pub mod heun;
pub mod lms;
pub mod pndm;
pub mod schedule;
mod sigmas;

use std::fmt;

pub use config::{Prediction, SchedulerConfig, TimestepSpacing};

use crate::rng::BatchRng;
use crate::{Error, Result};

/// One diffusers scheduler, driven one model call at a time. Calls are numbered from 0 within
/// `timesteps()` and must be made in order (a caller bug panics).
pub trait Sampler: Send {
    fn kind(&self) -> SamplerKind;

    /// The number of inference steps the sampler was built for.
    fn steps(&self) -> usize;

    /// The timestep of each model call still to run: one per step, except Heun (two model calls
    /// per step but the last) and PNDM (one extra call in its warm-up).
    fn timesteps(&self) -> &[f64];

    /// For the samplers that work on sigmas (all but DDIM and PNDM): the noise level of each call
    /// still to run, then the final one (0).
    fn sigmas(&self) -> Option<&[f64]>;

    /// What the initial `N(0, 1)` latents are multiplied by for txt2img.
    fn init_noise_sigma(&self) -> f64;

    /// The model input of call `call`: the sample, scaled for the samplers that work on sigmas.
    fn scale_model_input(&self, sample: &[f32], call: usize) -> Vec<f32>;

    /// The sample after call `call`, from the model's output at that call. Samplers that add noise
    /// (Euler ancestral, DDIM with eta > 0) draw it from `rng`, one generator per batch item.
    fn step(&mut self, model_output: &[f32], call: usize, sample: &[f32], rng: &mut BatchRng) -> Vec<f32>;

    /// `original` noised to the noise level of call `call` (img2img's start).
    fn add_noise(&self, original: &[f32], noise: &[f32], call: usize) -> Vec<f32>;

    /// Drops the calls of the first `steps` inference steps as diffusers' img2img pipeline does
    /// (`steps * order` calls; PNDM declares `order = 1`). Called at most once, before any call.
    fn skip_steps(&mut self, steps: usize) -> Result<()>;

    /// img2img: keeps `min(int(steps * strength), steps)` steps, as diffusers'
    /// `StableDiffusionImg2ImgPipeline` does, but at least one where diffusers would run no model
    /// call (`Img2ImgStart::raised_to_one` says so, for the caller to tell the user).
    fn start_at_strength(&mut self, strength: f64) -> Result<Img2ImgStart> {
        let start = Img2ImgStart::new(self.steps(), strength)?;
        self.skip_steps(self.steps() - start.steps_run)?;
        Ok(start)
    }
}

/// What diffusers' strength rule leaves of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Img2ImgStart {
    /// Inference steps that run (diffusers' `init_timestep`, at least 1).
    pub steps_run: usize,
    /// The strength kept no step, diffusers would run no model call, and one step is run anyway.
    /// (PNDM's call list being one longer than its steps, diffusers still runs its last call.)
    pub raised_to_one: bool,
}

impl Img2ImgStart {
    pub fn new(steps: usize, strength: f64) -> Result<Img2ImgStart> {
        if !(0.0..=1.0).contains(&strength) {
            return Err(Error::invalid(
                "strength",
                format!("must be between 0 and 1, found {strength}"),
            ));
        }
        // Python's `int(steps * strength)`: the f64 product truncated (10 * 0.7 = 7.000000000000001
        // keeps 7 steps; 100 * 0.29 = 28.999999999999996 keeps 28).
        let kept = ((steps as f64 * strength) as usize).min(steps);
        Ok(Img2ImgStart {
            steps_run: kept.max(1),
            raised_to_one: kept == 0,
        })
    }
}

/// The samplers, by the names the command line uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SamplerKind {
    Ddim,
    Pndm,
    Euler,
    EulerAncestral,
    DpmPp2m,
    DpmPp2mKarras,
    Lms,
    Heun,
}

impl SamplerKind {
    pub const ALL: [SamplerKind; 8] = [
        SamplerKind::Ddim,
        SamplerKind::Pndm,
        SamplerKind::Euler,
        SamplerKind::EulerAncestral,
        SamplerKind::DpmPp2m,
        SamplerKind::DpmPp2mKarras,
        SamplerKind::Lms,
        SamplerKind::Heun,
    ];

    /// Our name: what `--sampler` documents and `Display` writes.
    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Ddim => "ddim",
            SamplerKind::Pndm => "pndm",
            SamplerKind::Euler => "euler",
            SamplerKind::EulerAncestral => "euler-a",
            SamplerKind::DpmPp2m => "dpm++2m",
            SamplerKind::DpmPp2mKarras => "dpm++2m-karras",
            SamplerKind::Lms => "lms",
            SamplerKind::Heun => "heun",
        }
    }

    /// A1111's name, as its sampler menu spelled it before 1.9 split off the schedule type.
    pub fn a1111_name(self) -> &'static str {
        match self {
            SamplerKind::Ddim => "DDIM",
            SamplerKind::Pndm => "PLMS",
            SamplerKind::Euler => "Euler",
            SamplerKind::EulerAncestral => "Euler a",
            SamplerKind::DpmPp2m => "DPM++ 2M",
            SamplerKind::DpmPp2mKarras => "DPM++ 2M Karras",
            SamplerKind::Lms => "LMS",
            SamplerKind::Heun => "Heun",
        }
    }

    /// What A1111 (1.9 and later) writes into a PNG's `parameters`: the `Sampler` and, when it is
    /// not the sampler's own, the `Schedule type`.
    pub fn a1111_parameters(self) -> (&'static str, Option<&'static str>) {
        match self {
            SamplerKind::DpmPp2mKarras => (SamplerKind::DpmPp2m.a1111_name(), Some("Karras")),
            k => (k.a1111_name(), None),
        }
    }

    /// Other spellings `str::parse` accepts besides ours and A1111's: sd.cpp's,
    /// ComfyUI's, diffusers' and A1111's older internal names.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            SamplerKind::Ddim => &[],
            SamplerKind::Pndm => &[],
            SamplerKind::Euler => &["k_euler"],
            SamplerKind::EulerAncestral => &["euler_a", "euler_ancestral", "k_euler_a"],
            SamplerKind::DpmPp2m => &["dpmpp_2m", "k_dpmpp_2m"],
            SamplerKind::DpmPp2mKarras => &["dpmpp_2m_karras", "k_dpmpp_2m_ka"],
            SamplerKind::Lms => &["k_lms"],
            SamplerKind::Heun => &["k_heun"],
        }
    }

    /// One line on what the sampler does.
    pub fn description(self) -> &'static str {
        match self {
            SamplerKind::Ddim => "DDIM: deterministic, usable from about 10 steps",
            SamplerKind::Pndm => "PNDM / PLMS: SD 1.5's scheduler config default, linear multistep",
            SamplerKind::Euler => "Euler: first-order steps on the noise level, deterministic",
            SamplerKind::EulerAncestral => {
                "Euler ancestral: Euler with fresh noise each step; the image changes with the step count"
            }
            SamplerKind::DpmPp2m => "DPM-Solver++ 2M: second-order multistep, sharp at 20-30 steps",
            SamplerKind::DpmPp2mKarras => "DPM++ 2M on Karras noise levels (A1111's usual choice)",
            SamplerKind::Lms => "LMS: linear multistep of order up to 4 on the noise level",
            SamplerKind::Heun => "Heun: second order, two model calls per step but the last",
        }
    }

    /// The sampler of one of our names, exactly (what [`SamplerKind::name`] writes). User input
    /// goes through `str::parse`, which knows every spelling.
    pub fn from_name(name: &str) -> Result<SamplerKind> {
        SamplerKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = SamplerKind::ALL.iter().map(|k| k.name()).collect();
                Error::invalid(
                    "sampler",
                    format!("expected one of {}, found \"{name}\"", names.join(", ")),
                )
            })
    }

    /// Every name `str::parse` knows for this sampler.
    fn spellings(self) -> impl Iterator<Item = &'static str> {
        [self.name(), self.a1111_name()]
            .into_iter()
            .chain(self.aliases().iter().copied())
    }

    /// Builds the sampler for `steps` inference steps from a scheduler config.
    pub fn build(self, config: &SchedulerConfig, steps: usize) -> Result<Box<dyn Sampler>> {
        check_steps(steps, config.num_train_timesteps)?;
        Ok(match self {
            SamplerKind::Ddim => Box::new(ddim::Ddim::new(config, steps, 0.0)?),
            SamplerKind::Pndm => Box::new(pndm::Pndm::new(config, steps)?),
            SamplerKind::Euler => Box::new(euler::Euler::new(config, steps)),
            SamplerKind::EulerAncestral => Box::new(euler_ancestral::EulerAncestral::new(config, steps)),
            SamplerKind::DpmPp2m => Box::new(dpm_solver::DpmSolver2m::new(config, steps, false)),
            SamplerKind::DpmPp2mKarras => Box::new(dpm_solver::DpmSolver2m::new(config, steps, true)),
            SamplerKind::Lms => Box::new(lms::Lms::new(config, steps)),
            SamplerKind::Heun => Box::new(heun::Heun::new(config, steps)),
        })
    }
}

impl std::str::FromStr for SamplerKind {
    type Err = Error;

    /// Any spelling of our, A1111's or [`SamplerKind::aliases`] names. Case, spaces, `_` and `-`
    /// do not matter, and `pp` stands for `++` (`Euler A`, `dpmpp_2m`).
    fn from_str(name: &str) -> Result<SamplerKind> {
        let key = spelling_key(name);
        SamplerKind::ALL
            .into_iter()
            .find(|k| k.spellings().any(|s| spelling_key(s) == key))
            .ok_or_else(|| {
                let ours: Vec<&str> = SamplerKind::ALL.iter().map(|k| k.name()).collect();
                let a1111: Vec<&str> = SamplerKind::ALL.iter().map(|k| k.a1111_name()).collect();
                Error::invalid(
                    "sampler",
                    format!(
                        "expected one of {}, or A1111's {}; found {name:?}",
                        ours.join(", "),
                        a1111.join(", ")
                    ),
                )
            })
    }
}

impl fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A sampler name reduced to what tells samplers apart: lower case, no spaces, `_` or `-`, and
/// `++` written `pp`.
fn spelling_key(name: &str) -> String {
    name.to_lowercase()
        .replace("++", "pp")
        .chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-'))
        .collect()
}

/// `SamplerKind::from_name(name)?.build(config, steps)`.
pub fn from_name(name: &str, config: &SchedulerConfig, steps: usize) -> Result<Box<dyn Sampler>> {
    SamplerKind::from_name(name)?.build(config, steps)
}

fn check_steps(steps: usize, num_train: usize) -> Result<()> {
    if steps == 0 || steps > num_train {
        return Err(Error::invalid(
            "steps",
            format!("must be between 1 and the model's {num_train} training timesteps, found {steps}"),
        ));
    }
    Ok(())
}

/// Panics unless `call` is the next call of a sampler that expects `expected` (a caller bug).
fn check_call(call: usize, expected: usize, calls: usize) {
    assert!(
        call == expected,
        "sampler calls must run in order: expected call {expected}, got {call}"
    );
    assert!(
        call < calls,
        "call {call} is past the last of {calls} model calls"
    );
}

/// `f(a[i], b[i])` in f64, rounded to f32.
fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f64, f64) -> f64) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "sample and model output lengths differ");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f(x as f64, y as f64) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every spelling, in any case, names its own sampler and no other.
    #[test]
    fn every_spelling_names_one_sampler() {
        for kind in SamplerKind::ALL {
            for s in kind.spellings() {
                for variant in [s.to_string(), s.to_uppercase(), s.to_lowercase()] {
                    assert_eq!(variant.parse::<SamplerKind>().unwrap(), kind, "{variant:?}");
                }
            }
        }
        for (name, kind) in [
            ("Euler A", SamplerKind::EulerAncestral),
            ("dpm++ 2m karras", SamplerKind::DpmPp2mKarras),
            ("DPMPP_2M", SamplerKind::DpmPp2m),
            ("pndm", SamplerKind::Pndm),
            ("plms", SamplerKind::Pndm),
        ] {
            assert_eq!(name.parse::<SamplerKind>().unwrap(), kind, "{name:?}");
        }
        for bad in ["", "euler-b", "DPM++ 2M SDE", "LMS Karras", "dpm++"] {
            let e = bad.parse::<SamplerKind>().unwrap_err().to_string();
            assert!(e.contains("euler-a") && e.contains("Euler a"), "{e}");
        }
        // Our names, exactly, for code that stores them.
        assert!(SamplerKind::from_name("Euler a").is_err());
    }

    #[test]
    fn a1111_parameters_split_the_schedule_type() {
        assert_eq!(
            SamplerKind::DpmPp2mKarras.a1111_parameters(),
            ("DPM++ 2M", Some("Karras"))
        );
        assert_eq!(SamplerKind::Pndm.a1111_parameters(), ("PLMS", None));
        assert_eq!(SamplerKind::EulerAncestral.a1111_parameters(), ("Euler a", None));
    }
}
