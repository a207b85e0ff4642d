//! The samplers against diffusers 0.42 (goldens in tests/fixtures/schedulers/, made by
//! tools/make_scheduler_goldens.py), plus hand-checked cases.
//!
//! Tolerances and why:
//! - timesteps: exact (they are the float32 values diffusers passes to the model);
//! - betas, alphas_cumprod: exact (diffusers' float32 tables are reproduced operation for
//!   operation); sigmas and init_noise_sigma: 1e-6 relative (they too are float32 values; equal
//!   in practice, see `schedules_match_diffusers`);
//! - samples, per call, as errors scaled by the largest value of the reference sample:
//!   - against diffusers replayed in float64 (same code, same model outputs and noise, its float32
//!     tables widened, the latents handed from call to call in float32 as in a pipeline; see the
//!     golden script): `<= 5e-7`. Both sides then compute a call in double precision from the
//!     same inputs; what is left is our one f32 rounding of the result (<= 6e-8) and the sigma
//!     table, where torch's float32 `sqrt` is 1 ulp off in ~19% of the entries (see
//!     `schedule.rs`), which the larger steps carry to ~3 ulps of the sample. This is the check
//!     that the math is diffusers' math, call by call;
//!   - against diffusers as it runs, in float32: `<= 5e-7 + |diffusers32 - diffusers64|`, i.e.
//!     the triangle inequality over the replay. diffusers' own float32 error is usually a few
//!     1e-7 but reaches ~1e-5 where its float32 arithmetic cancels (e.g. Heun's 2-step schedule:
//!     `(x - x0) / sigma` at sigma 0.03 followed by a step of -14.6), so no fixed bound would
//!     be honest there. The largest values of all three are printed with `--nocapture`.

use std::collections::HashMap;

use sd_wgpu::rng::BatchRng;
use sd_wgpu::schedulers::config::{ClassDefaults, SchedulerConfig};
use sd_wgpu::schedulers::ddim::Ddim;
use sd_wgpu::schedulers::schedule::TrainSchedule;
use sd_wgpu::schedulers::{from_name, Img2ImgStart, Sampler, SamplerKind};
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schedulers");
const SAMPLE_TOL: f64 = 5e-7;

struct Goldens {
    json: Value,
    tables: HashMap<String, Vec<f32>>,
    runs: HashMap<String, Vec<f32>>,
    runs64: HashMap<String, Vec<f64>>,
}

/// The float32 and float64 tensors of a safetensors file, flattened.
fn load_tensors(file: &str) -> (HashMap<String, Vec<f32>>, HashMap<String, Vec<f64>>) {
    let bytes = std::fs::read(format!("{DIR}/{file}")).expect("fixture file");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let (mut f32s, mut f64s) = (HashMap::new(), HashMap::new());
    for (name, view) in st.tensors() {
        match view.dtype() {
            safetensors::Dtype::F32 => {
                let data = view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()));
                f32s.insert(name, data.collect());
            }
            safetensors::Dtype::F64 => {
                let data = view
                    .data()
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap()));
                f64s.insert(name, data.collect());
            }
            other => panic!("{name}: unexpected dtype {other:?}"),
        }
    }
    (f32s, f64s)
}

fn goldens() -> Goldens {
    let text = std::fs::read_to_string(format!("{DIR}/schedules.json")).expect("schedules.json");
    let (runs, runs64) = load_tensors("trajectories.safetensors");
    Goldens {
        json: serde_json::from_str(&text).unwrap(),
        tables: load_tensors("schedules.safetensors").0,
        runs,
        runs64,
    }
}

impl Goldens {
    fn config(&self, variant: &str) -> SchedulerConfig {
        SchedulerConfig::from_value(&self.json["variants"][variant], format!("variant {variant}"))
            .expect("golden configs parse")
    }

    fn entries(&self, list: &str) -> &Vec<Value> {
        self.json[list].as_array().unwrap()
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap()
}

fn usize_of(v: &Value, key: &str) -> usize {
    v[key].as_u64().unwrap() as usize
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// `max |a - b| / max |b|`.
fn scaled_err(ours: &[f64], reference: &[f64]) -> f64 {
    assert_eq!(ours.len(), reference.len());
    let scale = reference.iter().fold(0.0f64, |m, &v| m.max(v.abs())).max(1e-30);
    ours.iter()
        .zip(reference)
        .map(|(&a, &b)| (a - b).abs())
        .fold(0.0, f64::max)
        / scale
}

fn scaled_err32(ours: &[f32], reference: &[f32]) -> f64 {
    scaled_err(&f64s(ours), &f64s(reference))
}

/// Call `k` of a run's stacked tensor `[calls, ...]`.
fn call_slice<'a>(g: &'a Goldens, key: &str, what: &str, k: usize, len: usize) -> &'a [f32] {
    &g.runs[&format!("{key}/{what}")][k * len..(k + 1) * len]
}

#[test]
fn tables_match_diffusers_exactly() {
    let g = goldens();
    for (label, variant) in [("scaled_linear", "sd15"), ("linear", "empty")] {
        // DDIM's class defaults: what diffusers' DDIMScheduler.from_config made the table with.
        let train = TrainSchedule::new(&g.config(variant), &ClassDefaults::COMMON);
        assert_eq!(train.betas, g.tables[&format!("{label}/betas")], "{label} betas");
        assert_eq!(
            train.alphas_cumprod,
            g.tables[&format!("{label}/alphas_cumprod")],
            "{label} alphas_cumprod"
        );
    }
}

#[test]
fn schedules_match_diffusers() {
    let g = goldens();
    let mut checked = 0;
    let (mut max_sigma_err, mut inexact_sigmas, mut max_karras_t_err) = (0.0f64, 0, 0.0f64);
    for entry in g.entries("schedules") {
        let (name, variant, steps) = (
            str_of(entry, "sampler"),
            str_of(entry, "variant"),
            usize_of(entry, "steps"),
        );
        let key = str_of(entry, "key");
        let what = format!("{name} {variant} {steps} steps");
        let sampler = match from_name(name, &g.config(variant), steps) {
            Ok(s) => s,
            // The two schedules diffusers builds but cannot run (timestep 1000 of a 1000 table).
            Err(e) => {
                assert!(
                    steps == 1000 && (name == "ddim" || name == "pndm"),
                    "{what}: unexpected error {e}"
                );
                continue;
            }
        };
        let mut want_timesteps = f64s(&g.tables[&format!("{key}/timesteps")]);
        let mut want_sigmas = g.tables.get(&format!("{key}/sigmas")).cloned();
        let extra = want_timesteps.len() - sampler.timesteps().len();
        if extra > 0 {
            // numpy's extra "trailing" point, timestep -1 in diffusers (twice in Heun's list): we
            // keep `steps` points, the same ones, and end on sigma 0.
            assert!(
                want_timesteps
                    .drain(sampler.timesteps().len()..)
                    .all(|t| t == -1.0),
                "{what}"
            );
            if let Some(sigmas) = want_sigmas.as_mut() {
                sigmas.drain(sigmas.len() - 1 - extra..sigmas.len() - 1);
            }
        }
        let karras_fractional = variant == "karras" && matches!(name, "euler" | "lms" | "heun");
        if karras_fractional {
            // Recovered from Karras sigmas through diffusers' float32 log table (see
            // TrainSchedule::sigma_to_t): equal up to numpy's float32 log error.
            assert_eq!(sampler.timesteps().len(), want_timesteps.len(), "{what}");
            for (&a, &b) in sampler.timesteps().iter().zip(&want_timesteps) {
                let err = (a - b).abs() / b.max(1.0);
                assert!(err <= 1e-6, "{what}: timestep {a} vs {b}");
                max_karras_t_err = max_karras_t_err.max(err);
            }
        } else {
            assert_eq!(sampler.timesteps(), want_timesteps, "{what}: timesteps");
        }
        let want_init = entry["init_noise_sigma"].as_f64().unwrap();
        let init_err = (sampler.init_noise_sigma() - want_init).abs() / want_init;
        assert!(
            init_err <= 1e-6,
            "{what}: init_noise_sigma {} vs {want_init}",
            sampler.init_noise_sigma()
        );
        if let Some(want) = &want_sigmas {
            let ours = sampler.sigmas().expect("sigma sampler");
            assert_eq!(ours.len(), want.len(), "{what}: sigma count");
            for (i, (&a, &b)) in ours.iter().zip(want).enumerate() {
                let err = (a - b as f64).abs() / (b as f64).abs().max(1e-30);
                assert!(err <= 1e-6, "{what}: sigma {i}: {a} vs {b}");
                max_sigma_err = max_sigma_err.max(err);
                inexact_sigmas += usize::from(a != b as f64);
            }
        }
        checked += 1;
    }
    assert!(checked > 900, "only {checked} schedules checked");
    eprintln!(
        "{checked} schedules; sigmas: max rel err {max_sigma_err:e}, {inexact_sigmas} not bit-equal; \
         Karras timesteps of Euler/LMS/Heun: max rel err {max_karras_t_err:e}"
    );
}

/// Largest per-call errors of a run: ours vs the float64 replay, ours vs diffusers in float32,
/// and diffusers' own float32 error (its float32 run vs the replay).
#[derive(Default, Clone, Copy)]
struct RunErrors {
    vs64: f64,
    vs32: f64,
    diffusers32: f64,
}

/// Runs one golden trajectory, checking every call.
fn run_trajectory(g: &Goldens, run: &Value) -> RunErrors {
    let key = str_of(run, "key");
    let name = str_of(run, "sampler");
    let config = g.config(str_of(run, "variant"));
    let steps = usize_of(run, "steps");
    let calls = usize_of(run, "calls");
    let shape: Vec<usize> = g.json["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let (batch, len) = (shape[0], shape.iter().product::<usize>());
    let eta = run["eta"].as_f64().unwrap_or(0.0);
    let mut sampler: Box<dyn Sampler> = if eta > 0.0 {
        Box::new(Ddim::new(&config, steps, eta).unwrap())
    } else {
        from_name(name, &config, steps).unwrap()
    };
    let mut rng = BatchRng::new(g.json["noise_seed"].as_u64().unwrap(), batch);
    let mut x: Vec<f32> = match run.get("strength") {
        None => {
            let init = sampler.init_noise_sigma();
            rng.randn(len).iter().map(|&n| (n as f64 * init) as f32).collect()
        }
        Some(strength) => {
            let start = sampler.start_at_strength(strength.as_f64().unwrap()).unwrap();
            assert!(!start.raised_to_one);
            let original = &g.runs[&format!("{key}/original")];
            sampler.add_noise(original, &rng.randn(len), 0)
        }
    };
    let start_err = scaled_err32(&x, &g.runs[&format!("{key}/start")]);
    assert!(start_err <= SAMPLE_TOL, "{key}: start differs by {start_err:e}");
    assert_eq!(sampler.timesteps().len(), calls, "{key}: number of model calls");

    let mut errors = RunErrors::default();
    // diffusers' own float32 error in the sample the next call starts from.
    let mut input_err32 = 0.0;
    for k in 0..calls {
        let input = sampler.scale_model_input(&x, k);
        if k < 3 {
            let err = scaled_err32(&input, call_slice(g, key, "inputs", k, len));
            assert!(
                err <= SAMPLE_TOL + input_err32,
                "{key}: call {k}: model input differs by {err:e}"
            );
        }
        let model_output = call_slice(g, key, "model_outputs", k, len);
        x = sampler.step(model_output, k, &x, &mut rng);
        let ours = f64s(&x);
        let d32 = f64s(call_slice(g, key, "samples", k, len));
        let d64 = &g.runs64[&format!("{key}/samples64")][k * len..(k + 1) * len];
        let t = sampler.timesteps()[k];
        let (vs64, vs32, diffusers32) = (
            scaled_err(&ours, d64),
            scaled_err(&ours, &d32),
            scaled_err(&d32, d64),
        );
        assert!(
            vs64 <= SAMPLE_TOL,
            "{key}: call {k} (t = {t}): differs from the f64 replay by {vs64:e}"
        );
        assert!(
            vs32 <= SAMPLE_TOL + diffusers32,
            "{key}: call {k} (t = {t}): differs from diffusers by {vs32:e}, diffusers' own f32 error is {diffusers32:e}"
        );
        input_err32 = diffusers32;
        errors.vs64 = errors.vs64.max(vs64);
        errors.vs32 = errors.vs32.max(vs32);
        errors.diffusers32 = errors.diffusers32.max(diffusers32);
    }
    errors
}

#[test]
fn trajectories_match_diffusers() {
    let g = goldens();
    let mut worst: HashMap<String, RunErrors> = HashMap::new();
    let runs = g.entries("runs");
    assert!(runs.len() > 100);
    for run in runs {
        let err = run_trajectory(&g, run);
        let w = worst.entry(str_of(run, "sampler").to_string()).or_default();
        w.vs64 = w.vs64.max(err.vs64);
        w.vs32 = w.vs32.max(err.vs32);
        w.diffusers32 = w.diffusers32.max(err.diffusers32);
    }
    let mut names: Vec<_> = worst.into_iter().collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, w) in names {
        eprintln!(
            "{name:>15}: vs f64 replay {:.1e}, vs diffusers f32 {:.1e}, diffusers' own f32 error {:.1e}",
            w.vs64, w.vs32, w.diffusers32
        );
    }
}

#[test]
fn img2img_starts_match_diffusers() {
    let g = goldens();
    let config = g.config("sd15");
    for entry in g.entries("img2img") {
        let (name, steps) = (str_of(entry, "sampler"), usize_of(entry, "steps"));
        let strength = entry["strength"].as_f64().unwrap();
        let what = format!("{name} {steps} steps strength {strength}");
        let mut sampler = from_name(name, &config, steps).unwrap();
        let start = sampler.start_at_strength(strength).unwrap();
        let init = usize_of(entry, "init_timestep");
        assert_eq!(start.raised_to_one, init == 0, "{what}");
        assert_eq!(start.steps_run, init.max(1), "{what}");
        let theirs = f64s(
            &entry["timesteps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect::<Vec<_>>(),
        );
        if init == 0 {
            // diffusers keeps no step (PNDM: one call, its list being one longer); we run the
            // last step.
            assert_eq!(theirs.len(), usize::from(name == "pndm" && steps > 1), "{what}");
            let mut full = from_name(name, &config, steps).unwrap();
            full.skip_steps(steps - 1).unwrap();
            assert_eq!(sampler.timesteps(), full.timesteps(), "{what}");
        } else if name == "pndm" {
            // PNDM restarts on the kept steps (src/schedulers/pndm.rs): it starts at the timestep
            // DDIM starts at, with the warm-up repeat: t, t', t', ...
            let mut ddim = from_name("ddim", &config, steps).unwrap();
            ddim.start_at_strength(strength).unwrap();
            let (ours, ddim_ts) = (sampler.timesteps(), ddim.timesteps());
            assert_eq!(ours[0], ddim_ts[0], "{what}");
            assert_eq!(
                ours.len(),
                ddim_ts.len() + usize::from(ddim_ts.len() > 1),
                "{what}"
            );
        } else {
            assert_eq!(sampler.timesteps(), theirs, "{what}");
        }
    }
}

#[test]
fn strength_rule() {
    let kept = |steps, strength| Img2ImgStart::new(steps, strength).unwrap();
    assert_eq!(kept(50, 0.3).steps_run, 15);
    assert_eq!(kept(10, 0.7).steps_run, 7); // 7.000000000000001
    assert_eq!(kept(100, 0.29).steps_run, 28); // 28.999999999999996, truncated as Python's int()
    assert_eq!(
        kept(20, 1.0),
        Img2ImgStart {
            steps_run: 20,
            raised_to_one: false
        }
    );
    assert_eq!(
        kept(20, 0.0),
        Img2ImgStart {
            steps_run: 1,
            raised_to_one: true
        }
    );
    assert_eq!(
        kept(20, 0.049),
        Img2ImgStart {
            steps_run: 1,
            raised_to_one: true
        }
    );
    for bad in [-0.1, 1.0001, f64::NAN, f64::INFINITY] {
        let err = Img2ImgStart::new(20, bad).unwrap_err().to_string();
        assert!(err.contains("strength"), "{err}");
    }
}

#[test]
fn hand_checked_schedules() {
    let sd15 = SchedulerConfig::default();
    let train = TrainSchedule::new(&sd15, &ClassDefaults::COMMON);
    // scaled_linear betas run from beta_start to beta_end (float32 rounding of the endpoints).
    assert!((train.betas[0] as f64 - 0.00085).abs() < 1e-10);
    assert!((train.betas[999] as f64 - 0.012).abs() < 1e-9);
    // DDIM, 50 steps, leading spacing with offset 1: 981, 961, ..., 1.
    let ddim = from_name("ddim", &sd15, 50).unwrap();
    let want: Vec<f64> = (0..50).rev().map(|i| (i * 20 + 1) as f64).collect();
    assert_eq!(ddim.timesteps(), want);
    // PNDM repeats its second timestep: 51 calls for 50 steps.
    let pndm = from_name("pndm", &sd15, 50).unwrap();
    assert_eq!(&pndm.timesteps()[..4], &[981.0, 961.0, 961.0, 941.0]);
    assert_eq!(pndm.timesteps().len(), 51);
    // Euler, linspace: 999 down to 0 in 19 equal float32 steps; sigma 0 at the end.
    let euler = from_name("euler", &sd15, 20).unwrap();
    assert_eq!(euler.timesteps()[0], 999.0);
    assert_eq!(euler.timesteps()[1], (999.0 - 999.0 / 19.0) as f32 as f64);
    assert_eq!(*euler.timesteps().last().unwrap(), 0.0);
    assert_eq!(*euler.sigmas().unwrap().last().unwrap(), 0.0);
    assert_eq!(euler.init_noise_sigma(), train.sigmas[999] as f64);
    // Heun: two calls per step but the last.
    assert_eq!(from_name("heun", &sd15, 20).unwrap().timesteps().len(), 39);
    // DPM++ 2M Karras: sigmas from sigma_max to sigma_min of the table, then 0.
    let karras = from_name("dpm++2m-karras", &sd15, 10).unwrap();
    let sigmas = karras.sigmas().unwrap();
    assert_eq!(sigmas[0], train.sigmas[999] as f64);
    assert!((sigmas[9] - train.sigmas[0] as f64).abs() < 1e-6 * sigmas[9]);
    assert_eq!(sigmas[10], 0.0);
}

#[test]
fn trailing_spacing_keeps_the_requested_number_of_steps() {
    // numpy's float arange gives 62 points for 61 trailing steps (diffusers then ends on -1).
    let config = SchedulerConfig {
        timestep_spacing: Some(sd_wgpu::schedulers::TimestepSpacing::Trailing),
        ..SchedulerConfig::default()
    };
    for name in ["ddim", "euler", "dpm++2m"] {
        let s = from_name(name, &config, 61).unwrap();
        assert_eq!(s.timesteps().len(), 61, "{name}");
        assert!(s.timesteps().iter().all(|&t| t >= 0.0), "{name}");
    }
}

#[test]
fn names_and_bad_arguments() {
    let sd15 = SchedulerConfig::default();
    for kind in SamplerKind::ALL {
        assert_eq!(SamplerKind::from_name(kind.name()).unwrap(), kind);
        assert_eq!(kind.build(&sd15, 20).unwrap().kind(), kind);
    }
    let err = from_name("euler_a", &sd15, 20).err().unwrap().to_string();
    assert!(
        err.contains("sampler") && err.contains("euler-a") && err.contains("euler_a"),
        "{err}"
    );
    for steps in [0, 1001] {
        let err = from_name("euler", &sd15, steps).err().unwrap().to_string();
        assert!(err.contains("steps"), "{err}");
    }
    // Leading spacing with offset 1 reaches timestep 1000 at 1000 steps (diffusers indexes past
    // its table there).
    let err = from_name("ddim", &sd15, 1000).err().unwrap().to_string();
    assert!(err.contains("steps_offset") && err.contains("1000"), "{err}");
    let prk = SchedulerConfig {
        skip_prk_steps: Some(false),
        ..sd15.clone()
    };
    let err = from_name("pndm", &prk, 3).err().unwrap().to_string();
    assert!(err.contains("skip_prk_steps"), "{err}");
    let err = Ddim::new(&sd15, 20, -1.0).err().unwrap().to_string();
    assert!(err.contains("eta"), "{err}");
}

#[test]
fn config_parsing() {
    let parse = |text: &str| {
        SchedulerConfig::from_value(&serde_json::from_str(text).unwrap(), "scheduler_config.json")
    };
    // The hub's SD 1.5 file is the default.
    let sd15 = parse(
        r#"{"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
            "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1,
            "trained_betas": null, "clip_sample": false}"#,
    )
    .unwrap();
    assert_eq!(sd15, SchedulerConfig::default());
    // Unknown keys and keys of other schedulers are ignored; algorithm keys too.
    assert!(parse(r#"{"solver_order": 3, "some_future_key": [1, 2], "thresholding": false}"#).is_ok());
    let v = parse(r#"{"prediction_type": "v_prediction", "timestep_spacing": "trailing"}"#).unwrap();
    assert_eq!(v.prediction_type, sd_wgpu::schedulers::Prediction::VPrediction);
    for (text, key) in [
        (r#"{"prediction_type": "sample"}"#, "prediction_type"),
        (r#"{"beta_schedule": "squaredcos_cap_v2"}"#, "beta_schedule"),
        (r#"{"timestep_spacing": "even"}"#, "timestep_spacing"),
        (r#"{"thresholding": true}"#, "thresholding"),
        (r#"{"rescale_betas_zero_snr": true}"#, "rescale_betas_zero_snr"),
        (r#"{"trained_betas": [0.1, 0.2]}"#, "trained_betas"),
        (r#"{"final_sigmas_type": "sigma_min"}"#, "final_sigmas_type"),
        (r#"{"steps_offset": "one"}"#, "steps_offset"),
        (r#"{"steps_offset": -1}"#, "steps_offset"),
        (r#"{"beta_start": 2.0}"#, "beta_start"),
        (r#"{"clip_sample": 1}"#, "clip_sample"),
        (r#"{"num_train_timesteps": 1}"#, "num_train_timesteps"),
        (r#"[1, 2]"#, "JSON object"),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(
            err.contains("scheduler_config.json") && err.contains(key),
            "{text}: {err}"
        );
    }
}
