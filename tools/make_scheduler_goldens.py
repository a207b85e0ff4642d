#!/usr/bin/env python3
"""Golden files for the samplers (src/schedulers/) and the torch-compatible RNG (src/rng.rs).

Run from the repository root with the reference environment:

    ref/bin/python tools/make_scheduler_goldens.py

Needs torch, diffusers, numpy, safetensors and scipy (diffusers' LMSDiscreteScheduler imports it).

Writes tests/fixtures/schedulers/:
  - schedules.json: init_noise_sigma for every sampler, config variant and step count in
    STEP_COUNTS, the img2img start for several strengths, the list of runs, library versions;
  - schedules.safetensors: the matching timesteps and sigmas (float32 in diffusers, so stored as
    float32 without loss), and betas and alphas_cumprod for the beta schedules we support;
  - trajectories.safetensors: full runs on fixed tensors (see `run_calls`): the initial sample, and
    per model call the scaled model input, the synthetic model output fed to `step`, and the sample
    `step` returned; img2img runs also hold the clean latents and the noised start. Each run is
    also replayed in float64 (`samples64`, see `replay_f64`): the same diffusers code on the same
    model outputs and noise, with its float32 tables and arithmetic widened (the latents between
    calls stay float32), so the tests can tell diffusers' own float32 rounding from a difference
    in the math;
  - randn.safetensors: torch.randn dumps for several shapes and seeds, and one stream of calls.

The model outputs are stored, not recomputed by the tests: they are inputs to the samplers, and
storing them keeps the tests free of any attempt to reproduce torch's float rounding of a made-up
model. Nothing in this directory is produced by sd-wgpu.
"""

import json
import os
import platform
import sys
import types

import numpy as np
import scipy
import torch
import diffusers
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionImg2ImgPipeline,
)
from diffusers.utils.torch_utils import randn_tensor
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sd15  # noqa: E402

torch.set_num_threads(1)

OUT = os.path.join("tests", "fixtures", "schedulers")

# SD 1.5's scheduler config as on the hub: no `timestep_spacing` key, so each sampler built
# from it keeps its own diffusers default (tools/sd15.py).
SD15_CONFIG = sd15.SCHEDULER_CONFIG

# Config variants: name -> dict. "empty" is `{}`: every key takes each class's own default.
VARIANTS = {
    "sd15": SD15_CONFIG,
    "leading": {**SD15_CONFIG, "timestep_spacing": "leading"},
    "trailing": {**SD15_CONFIG, "timestep_spacing": "trailing"},
    "linspace": {**SD15_CONFIG, "timestep_spacing": "linspace"},
    "karras": {**SD15_CONFIG, "use_karras_sigmas": True},
    "vpred": {**SD15_CONFIG, "prediction_type": "v_prediction"},
    "prk": {**SD15_CONFIG, "skip_prk_steps": False},
    "empty": {},
}

# Sampler name (as sd-wgpu spells it) -> (diffusers class, keys the name forces).
SAMPLERS = {
    "ddim": (DDIMScheduler, {}),
    "pndm": (PNDMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler-a": (EulerAncestralDiscreteScheduler, {}),
    "dpm++2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpm++2m-karras": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "lms": (LMSDiscreteScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}),
}

# Step counts whose schedules are dumped (the long ones for the SD 1.5 config only). 61 is one of the
# counts where numpy's float `arange` yields one point too many for "trailing" spacing (see
# src/schedulers/schedule.rs).
STEP_COUNTS = [1, 2, 3, 4, 5, 7, 10, 13, 20, 25, 33, 50, 61, 100]
LONG_STEP_COUNTS = [150, 999, 1000]
STRENGTHS = [0.0, 0.01, 0.05, 0.3, 0.5, 0.75, 0.999, 1.0]

# Latent shape of the trajectories: batch 2 (one generator per item, seeds NOISE_SEED + i) with 18
# values per item, so per-item noise takes torch's >= 16 path including its tail block.
SHAPE = (2, 1, 3, 6)
# Scaled model inputs are stored for the first few calls of each run only (they are the sample times
# a per-call factor), to keep the fixture small.
INPUT_CALLS = 3
NOISE_SEED = 100


def make(name, variant):
    cls, forced = SAMPLERS[name]
    return cls.from_config({**VARIANTS[variant], **forced})


def f64list(t):
    return [float(x) for x in np.asarray(t, dtype=np.float64).reshape(-1)]


def schedule_entry(name, variant, steps, tensors):
    s = make(name, variant)
    s.set_timesteps(steps)
    key = f"{name}/{variant}/{steps}"
    tensors[f"{key}/timesteps"] = s.timesteps.numpy().astype(np.float32)
    if name not in ("ddim", "pndm"):
        tensors[f"{key}/sigmas"] = s.sigmas.numpy().astype(np.float32)
    return {"key": key, "init_noise_sigma": float(s.init_noise_sigma)}


def img2img_scheduler(name, variant, steps, strength):
    """A scheduler as diffusers' StableDiffusionImg2ImgPipeline leaves it before its denoising loop,
    and the timesteps that loop runs: `set_timesteps`, then the pipeline's own `get_timesteps` (which
    slices the call list at `t_start * scheduler.order` and calls `set_begin_index` where the
    scheduler has it), called on a stand-in holding only the scheduler (all it reads)."""
    s = make(name, variant)
    s.set_timesteps(steps)
    pipe = types.SimpleNamespace(scheduler=s)
    timesteps, _ = StableDiffusionImg2ImgPipeline.get_timesteps(pipe, steps, strength, None)
    return s, timesteps


def img2img_entry(name, variant, steps, strength):
    init_timestep = min(int(steps * strength), steps)
    _, timesteps = img2img_scheduler(name, variant, steps, strength)
    return {
        "strength": strength,
        "init_timestep": init_timestep,
        "timesteps": f64list(timesteps),
    }


def fake_unet(x_in, t):
    """A made-up denoiser: smooth in the input, varying with t, so multistep history matters."""
    ramp = torch.arange(x_in.numel(), dtype=torch.float32).reshape(x_in.shape)
    t = float(t)
    return torch.tanh(x_in * (1.0 + t / 1000.0)) + 0.05 * torch.cos(ramp * 0.3 + t / 100.0)


def generators():
    return [torch.Generator().manual_seed(NOISE_SEED + i) for i in range(SHAPE[0])]


def step_kwargs(name, gens, eta):
    """What the pipelines' `prepare_extra_step_kwargs` passes to `step` (eta 0 is DDIM's default)."""
    if name == "euler-a":
        return {"generator": gens}
    if name == "ddim" and eta > 0:
        return {"generator": gens, "eta": eta}
    return {}


def run_calls(s, name, sample, timesteps, gens, tensors, key, eta):
    """Runs the denoising loop of diffusers' SD pipelines with `fake_unet` and records, stacked over
    calls: `inputs` (scaled model input, first INPUT_CALLS calls), `model_outputs`, `samples` (what
    `step` returned)."""
    inputs, outputs, samples = [], [], []
    for k, t in enumerate(timesteps):
        x_in = s.scale_model_input(sample, t)
        eps = fake_unet(x_in, t)
        sample = s.step(eps, t, sample, **step_kwargs(name, gens, eta)).prev_sample
        if k < INPUT_CALLS:
            inputs.append(x_in.numpy().copy())
        outputs.append(eps.numpy().copy())
        samples.append(sample.numpy().copy())
    if len(timesteps) > 0:
        tensors[f"{key}/inputs"] = np.stack(inputs)
        tensors[f"{key}/model_outputs"] = np.stack(outputs)
        tensors[f"{key}/samples"] = np.stack(samples)
    return len(timesteps)


class _Float64Torch:
    """Stands in for `torch` inside a scheduler module: its `float32` is float64, so the explicit
    `sample.to(torch.float32)` casts of Euler, Euler a and DPM++ keep float64."""

    def __getattr__(self, attr):
        return torch.float64 if attr == "float32" else getattr(torch, attr)


def _randn_f32_as_f64(shape, generator=None, device=None, dtype=None, layout=None):
    """The float32 noise the float32 run drew (same generators, same order), widened."""
    return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32).double()


def replay_f64(s, name, start, timesteps, outputs, gens, eta):
    """Replays a run in float64: `s` is a fresh scheduler set up as for the float32 run; its float32
    tables are widened (their values unchanged), the recorded model outputs are fed in, the
    module's float32 casts and noise are redirected, and each call's result is kept in float64
    but handed to the next call rounded to float32. Returns the float64 results, stacked."""
    for attr in ("sigmas", "alphas_cumprod", "final_alpha_cumprod"):
        if isinstance(getattr(s, attr, None), torch.Tensor):
            setattr(s, attr, getattr(s, attr).double())
    module = sys.modules[type(s).__module__]
    saved = {k: getattr(module, k) for k in ("torch", "randn_tensor") if hasattr(module, k)}
    module.torch = _Float64Torch()
    if "randn_tensor" in saved:
        module.randn_tensor = _randn_f32_as_f64
    try:
        sample, samples = torch.from_numpy(start).double(), []
        for k, t in enumerate(timesteps):
            s.scale_model_input(sample, t)  # Euler-family bookkeeping (and their warning without it)
            eps = torch.from_numpy(outputs[k]).double()
            sample = s.step(eps, t, sample, **step_kwargs(name, gens, eta)).prev_sample
            assert sample.dtype == torch.float64, name
            samples.append(sample.numpy().copy())
            # Between calls the latents are float32, in sd-wgpu as in diffusers' float32 pipelines:
            # the replay rounds them there too, so it isolates the arithmetic of each call.
            sample = sample.float().double()
    finally:
        for k, v in saved.items():
            setattr(module, k, v)
    return np.stack(samples)


def txt2img_trajectory(name, variant, steps, tensors, eta=0.0):
    key = f"txt2img/{name}/{variant}/{steps}" + (f"/eta{eta}" if eta > 0 else "")
    s = make(name, variant)
    s.set_timesteps(steps)
    gens = generators()
    # The initial latents come from the same per-item generators, as in the pipelines.
    noise = torch.cat([torch.randn((1,) + SHAPE[1:], generator=g, dtype=torch.float32) for g in gens])
    sample = noise * s.init_noise_sigma
    tensors[f"{key}/start"] = sample.numpy().copy()
    calls = run_calls(s, name, sample, s.timesteps, gens, tensors, key, eta)

    s = make(name, variant)
    s.set_timesteps(steps)
    gens = generators()
    for g in gens:
        torch.randn((1,) + SHAPE[1:], generator=g, dtype=torch.float32)  # the initial latents
    outputs = tensors[f"{key}/model_outputs"]
    tensors[f"{key}/samples64"] = replay_f64(s, name, tensors[f"{key}/start"], s.timesteps, outputs, gens, eta)
    return {"key": key, "sampler": name, "variant": variant, "steps": steps, "eta": eta, "calls": calls}


def img2img_trajectory(name, variant, steps, strength, tensors):
    key = f"img2img/{name}/{variant}/{steps}/{strength}"
    s, timesteps = img2img_scheduler(name, variant, steps, strength)
    gens = generators()
    original = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7), dtype=torch.float32)
    noise = torch.cat([torch.randn((1,) + SHAPE[1:], generator=g, dtype=torch.float32) for g in gens])
    start = s.add_noise(original, noise, timesteps[:1].repeat(SHAPE[0]))
    tensors[f"{key}/original"] = original.numpy().copy()
    tensors[f"{key}/start"] = start.numpy().copy()
    calls = run_calls(s, name, start, timesteps, gens, tensors, key, 0.0)

    s, timesteps = img2img_scheduler(name, variant, steps, strength)
    gens = generators()
    for g in gens:
        torch.randn((1,) + SHAPE[1:], generator=g, dtype=torch.float32)  # the img2img noise
    outputs = tensors[f"{key}/model_outputs"]
    tensors[f"{key}/samples64"] = replay_f64(s, name, tensors[f"{key}/start"], timesteps, outputs, gens, 0.0)
    return {"key": key, "sampler": name, "variant": variant, "steps": steps, "strength": strength, "calls": calls}


def tables():
    """betas and alphas_cumprod as diffusers stores them (float32)."""
    out = {}
    for label, cfg in [("scaled_linear", SD15_CONFIG), ("linear", {})]:
        s = DDIMScheduler.from_config(cfg)
        out[f"{label}/betas"] = s.betas.numpy().copy()
        out[f"{label}/alphas_cumprod"] = s.alphas_cumprod.numpy().copy()
    return out


RANDN_SEEDS = [0, 1, 42, 2**32 + 5, 2**63 - 1, 2**64 - 1]
RANDN_SHAPES = [(1,), (3,), (15,), (16,), (17,), (31,), (33,), (100,), (1, 4, 8, 8), (1, 4, 9, 7)]
# A stream of calls on one generator: the scalar path (< 16 values) caches a second normal that a
# later scalar call consumes; the >= 16 path neither uses nor clears that cache.
RANDN_STREAM = [(3,), (16,), (1,), (1,), (17,), (5,), (2,), (1, 4, 8, 8), (1,), (40,)]


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def randn_dumps():
    tensors, meta = {}, {"single": [], "large": []}
    for seed in RANDN_SEEDS:
        for shape in RANDN_SHAPES:
            key = f"randn/{seed}/{'x'.join(map(str, shape))}"
            g = torch.Generator().manual_seed(seed)
            tensors[key] = torch.randn(shape, generator=g, dtype=torch.float32).numpy().reshape(-1).copy()
            meta["single"].append({"key": key, "seed": seed, "shape": list(shape)})
        g = torch.Generator().manual_seed(seed)
        for i, shape in enumerate(RANDN_STREAM):
            key = f"stream/{seed}/{i}"
            tensors[key] = torch.randn(shape, generator=g, dtype=torch.float32).numpy().reshape(-1).copy()
        meta.setdefault("stream", {"shapes": [list(s) for s in RANDN_STREAM], "seeds": RANDN_SEEDS})
    # SD latents: full values for two seeds; for the rest a checksum of all bits plus a sample.
    for seed, shape, full in [
        (0, (1, 4, 64, 64), True),
        (42, (1, 4, 64, 64), True),
        (1234, (2, 4, 64, 64), False),
        (2**63 - 1, (1, 4, 96, 64), False),
    ]:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32).numpy()
        x = x.reshape(-1)
        key = f"large/{seed}/{'x'.join(map(str, shape))}"
        entry = {"key": key, "seed": seed, "shape": list(shape), "fnv1a64": f"{fnv1a64(x.tobytes()):016x}"}
        if full:
            tensors[key] = x.copy()
        else:
            tensors[key + "/every97"] = x[::97].copy()
        entry["full"] = full
        meta["large"].append(entry)
    return tensors, meta


def main():
    os.makedirs(OUT, exist_ok=True)
    versions = {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
    }

    schedules, schedule_tensors = [], tables()
    for name in SAMPLERS:
        for variant in VARIANTS:
            for steps in STEP_COUNTS + (LONG_STEP_COUNTS if variant == "sd15" else []):
                if name == "pndm" and variant in ("prk", "empty") and steps < 4:
                    continue  # diffusers cannot build PRK warm-up steps from fewer than 4 steps
                entry = schedule_entry(name, variant, steps, schedule_tensors)
                entry.update({"sampler": name, "variant": variant, "steps": steps})
                schedules.append(entry)

    img2img = []
    for name in SAMPLERS:
        for steps in [1, 4, 20, 50]:
            for strength in STRENGTHS:
                entry = img2img_entry(name, "sd15", steps, strength)
                entry.update({"sampler": name, "variant": "sd15", "steps": steps})
                img2img.append(entry)

    tensors = {}
    runs = []
    for name in SAMPLERS:
        for steps in [1, 2, 3, 5, 20]:
            runs.append(txt2img_trajectory(name, "sd15", steps, tensors))
        for variant in ["leading", "trailing", "linspace", "karras", "vpred", "empty"]:
            runs.append(txt2img_trajectory(name, variant, 10, tensors))
    runs.append(txt2img_trajectory("pndm", "prk", 10, tensors))
    runs.append(txt2img_trajectory("pndm", "prk", 4, tensors))
    runs.append(txt2img_trajectory("ddim", "sd15", 10, tensors, eta=0.5))
    runs.append(txt2img_trajectory("ddim", "sd15", 3, tensors, eta=1.0))
    # 0.05 and 0.95 keep 1 and 19 of the 20 steps (t_start 19 and 1: PNDM's warm-up repeat is then
    # the second kept call); at 0.01 no step is kept, yet PNDM still has its last call to run.
    for name in SAMPLERS:
        for strength in [0.05, 0.3, 0.75, 0.95, 1.0]:
            runs.append(img2img_trajectory(name, "sd15", 20, strength, tensors))
    runs.append(img2img_trajectory("pndm", "sd15", 20, 0.01, tensors))
    runs.append(img2img_trajectory("pndm", "prk", 20, 0.5, tensors))
    versions["scipy"] = scipy.__version__

    randn, randn_meta = randn_dumps()

    meta = {"versions": versions, "generator": "tools/make_scheduler_goldens.py"}
    with open(os.path.join(OUT, "schedules.json"), "w") as f:
        json.dump(
            {
                **meta,
                "variants": VARIANTS,
                "shape": list(SHAPE),
                "noise_seed": NOISE_SEED,
                "schedules": schedules,
                "img2img": img2img,
                "runs": runs,
                "randn": randn_meta,
            },
            f,
            separators=(",", ":"),
        )
    st_meta = {k: str(v) for k, v in versions.items()}
    save_file(schedule_tensors, os.path.join(OUT, "schedules.safetensors"), metadata=st_meta)
    save_file(tensors, os.path.join(OUT, "trajectories.safetensors"), metadata=st_meta)
    save_file(randn, os.path.join(OUT, "randn.safetensors"), metadata=st_meta)
    for fname in sorted(os.listdir(OUT)):
        print(f"{fname}: {os.path.getsize(os.path.join(OUT, fname))} bytes")


if __name__ == "__main__":
    main()
