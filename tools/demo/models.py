"""Architecture of the demo model: standard SD 1.x components (diffusers / transformers classes),
only smaller. The configs here are the whole difference from SD 1.5, so a loader that reads
SD 1.5's diffusers folder reads this one the same way.

- VAE: AutoencoderKL, 4 levels (latent factor 8 like SD), 4 latent channels.
- Text encoder: CLIPTextModel with the real 49408-token vocabulary, 77 positions, quick_gelu.
- UNet: UNet2DConditionModel with SD 1.x block types, cross_attention_dim = text width.
- Scheduler: SD 1.5's scheduler config key for key (no `timestep_spacing` key), with the class
  DDIMScheduler in place of PNDMScheduler, as SD 2 ships it and as the original CompVis SD 1.x
  scripts sampled by default. Why: PNDM's 4th-order multistep extrapolation breaks this model's
  images up at cfg 7.5 (held-out captions with all five attributes right: 46% at cfg 7.5 against
  60% at cfg 1), DDIM does not (71% against 60%; `evaluate.py generate --n 240` at UNet step
  13000, 25 steps). The noise schedule, the part that must match training, is SD's.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sd15  # noqa: E402

IMAGE_SIDE = 64  # pixels; the latent is IMAGE_SIDE / 8 = 8 per side
TEXT_WIDTH = 64

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(32, 32, 64, 64),
    layers_per_block=1,
    latent_channels=4,
    # One group, not SD's 32: these images are flat colours, and a GroupNorm group that is
    # spatially constant normalises to zero. With 32 channels in 32 groups flat regions carried
    # no information and training stalled; 8 groups learned, 1 group learned fastest.
    norm_num_groups=1,
    sample_size=IMAGE_SIDE,
)

TEXT_CONFIG = dict(
    vocab_size=49408,
    hidden_size=TEXT_WIDTH,
    intermediate_size=4 * TEXT_WIDTH,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
    projection_dim=TEXT_WIDTH,
)

UNET_CONFIG = dict(
    sample_size=IMAGE_SIDE // 8,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(64, 128, 128),
    layers_per_block=1,
    attention_head_dim=8,  # as in SD 1.x configs: the number of heads
    cross_attention_dim=TEXT_WIDTH,
    norm_num_groups=8,  # 8+ channels per group (SD 1.5 has 10), so flat latents keep their values
)

# SD 1.5's scheduler/scheduler_config.json, key for key, but DDIM (see the module docstring).
SCHEDULER_CONFIG = {**sd15.SCHEDULER_CONFIG, "_class_name": "DDIMScheduler"}


def make_vae(scaling_factor=1.0):
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE_CONFIG, scaling_factor=scaling_factor)


def make_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))


def make_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**UNET_CONFIG)


def make_training_scheduler():
    """The DDPM noise schedule SD was trained with (scaled_linear, 0.00085..0.012, 1000 steps)."""
    from diffusers import DDPMScheduler

    keys = ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps", "clip_sample")
    return DDPMScheduler(**{k: SCHEDULER_CONFIG[k] for k in keys})
