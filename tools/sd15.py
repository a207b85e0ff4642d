"""What the tools/ scripts share about Stable Diffusion 1.5 itself.

SCHEDULER_CONFIG is runwayml/stable-diffusion-v1-5's scheduler/scheduler_config.json as on the
hub, key for key and in its order: a PNDM config (diffusers 0.6 era) with SD's noise schedule
(scaled_linear betas 0.00085..0.012, 1000 training steps) and no `timestep_spacing` key, so each
sampler built from it keeps its own diffusers default. Copy it (`{**SCHEDULER_CONFIG, ...}`)
before changing a key.
"""

SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}
