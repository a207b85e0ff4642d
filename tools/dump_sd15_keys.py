"""Dumps the parameter names and shapes of SD 1.5 (UNet, VAE, CLIP-L text encoder)
in both namings, for the key-map tests: tests/fixtures/loaders/sd15_keys.json.

- `diffusers`: the state-dict names of diffusers' UNet2DConditionModel and AutoencoderKL
  and transformers' CLIPTextModel built from the SD 1.5 configs on the `meta` device (no
  weights). Text-encoder names carry the `text_model.` prefix of transformers 4 (the
  naming of every SD 1.5 file on the hub, and the one sd-wgpu presents to its models);
  transformers 5 drops it, so it is added here.
- `ldm`: the names of an original single-file checkpoint (`model.diffusion_model.*`,
  `first_stage_model.*`, `cond_stage_model.transformer.*`). They are built by inverting the
  docs/formats.md tables, then VALIDATED with diffusers' own single-file converter
  (`convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint`):
  the converter must consume every LDM key exactly and produce every diffusers key with its
  shape (including the squeezed VAE attention 1x1 convs). The script fails otherwise.
- `configs`: the components' config.json as `save_pretrained` writes them, plus the SD 1.5
  model_index.json and scheduler_config.json, for building a diffusers-folder fixture.

Run: ref/bin/python tools/dump_sd15_keys.py
"""

import json
import re
import sys
from pathlib import Path

import diffusers
import torch
import transformers
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
)
from transformers import CLIPTextConfig, CLIPTextModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sd15  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "loaders" / "sd15_keys.json"
torch.set_num_threads(1)

# runwayml/stable-diffusion-v1-5 configs (the keys that differ from the class defaults).
UNET = dict(
    act_fn="silu", attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280],
    center_input_sample=False, cross_attention_dim=768,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2,
    mid_block_scale_factor=1, norm_eps=1e-05, norm_num_groups=32, out_channels=4, sample_size=64,
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
)
VAE = dict(
    act_fn="silu", block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
    in_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, out_channels=3,
    sample_size=512, up_block_types=["UpDecoderBlock2D"] * 4,
)
CLIP = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
    num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
    layer_norm_eps=1e-05, projection_dim=768, bos_token_id=0, eos_token_id=2, pad_token_id=1,
)
MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.6.0",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}

RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
          ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]


def unet_to_ldm(name):
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    module, leaf = name.rsplit(".", 1)
    if module in fixed:
        return f"{fixed[module]}.{leaf}"

    def resnet(rest):
        for new, old in RESNET:
            if rest.startswith(new + "."):
                return old + rest[len(new):]
        raise ValueError(name)

    if m := re.fullmatch(r"down_blocks\.(\d)\.resnets\.(\d)\.(.*)", name):
        i, j, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{3 * i + j + 1}.0.{resnet(rest)}"
    if m := re.fullmatch(r"down_blocks\.(\d)\.attentions\.(\d)\.(.*)", name):
        return f"input_blocks.{3 * int(m[1]) + int(m[2]) + 1}.1.{m[3]}"
    if m := re.fullmatch(r"down_blocks\.(\d)\.downsamplers\.0\.conv\.(.*)", name):
        return f"input_blocks.{3 * (int(m[1]) + 1)}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d)\.(.*)", name):
        return f"middle_block.{2 * int(m[1])}.{resnet(m[2])}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.*)", name):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d)\.resnets\.(\d)\.(.*)", name):
        return f"output_blocks.{3 * int(m[1]) + int(m[2])}.0.{resnet(m[3])}"
    if m := re.fullmatch(r"up_blocks\.(\d)\.attentions\.(\d)\.(.*)", name):
        return f"output_blocks.{3 * int(m[1]) + int(m[2])}.1.{m[3]}"
    if m := re.fullmatch(r"up_blocks\.(\d)\.upsamplers\.0\.(.*)", name):
        i = int(m[1])
        return f"output_blocks.{3 * i + 2}.{1 if i == 0 else 2}.{m[2]}"
    raise ValueError(name)


def vae_to_ldm(name, shape):
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)", name):
        new = f"{m[1]}.mid.attn_1.{attn[m[2]]}.{m[3]}"
        if m[2] != "group_norm" and m[3] == "weight":
            shape = shape + [1, 1]  # 1x1 convs in LDM
        return new, shape
    name = name.replace("conv_shortcut", "nin_shortcut")
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d)\.resnets\.(\d)\.(.*)", name):
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3]}", shape
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d)\.downsamplers\.0\.conv\.(.*)", name):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}", shape
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d)\.resnets\.(\d)\.(.*)", name):
        return f"decoder.up.{3 - int(m[1])}.block.{m[2]}.{m[3]}", shape
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d)\.upsamplers\.0\.conv\.(.*)", name):
        return f"decoder.up.{3 - int(m[1])}.upsample.conv.{m[2]}", shape
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.*)", name):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}", shape
    return name.replace("conv_norm_out", "norm_out"), shape


class Recording(dict):
    """A state dict that records which keys the converter reads."""

    def __init__(self, *a):
        super().__init__(*a)
        self.read = set()

    def get(self, k, default=None):
        self.read.add(k)
        return super().get(k, default)

    def __getitem__(self, k):
        self.read.add(k)
        return super().__getitem__(k)


def shapes(sd):
    return {k: list(v.shape) for k, v in sd.items()}


def validate(name, ldm, converted, want):
    got = shapes({k: v for k, v in converted.items() if v is not None})
    assert got == want, f"{name}: diffusers' converter disagrees: {set(got) ^ set(want)}"
    unread = set(ldm) - ldm.read
    assert not unread, f"{name}: LDM keys the converter never reads: {sorted(unread)[:5]}"


def main():
    with torch.device("meta"):
        unet = UNet2DConditionModel(**UNET)
        vae = AutoencoderKL(**VAE)
        clip = CLIPTextModel(CLIPTextConfig(**CLIP))
    meta = lambda s: torch.empty(s, device="meta")  # noqa: E731

    unet_d = shapes(unet.state_dict())
    unet_l = Recording({"model.diffusion_model." + unet_to_ldm(k): meta(s) for k, s in unet_d.items()})
    validate("unet", unet_l, convert_ldm_unet_checkpoint(unet_l, dict(unet.config)), unet_d)

    vae_d = shapes(vae.state_dict())
    vae_l = Recording({"first_stage_model." + n: meta(s) for n, s in (vae_to_ldm(k, v) for k, v in vae_d.items())})
    validate("vae", vae_l, convert_ldm_vae_checkpoint(vae_l, dict(vae.config)), vae_d)

    clip_d = {("" if k.startswith("text_model.") else "text_model.") + k: v
              for k, v in shapes(clip.state_dict()).items()}
    clip_l = Recording({"cond_stage_model.transformer." + k: meta(s) for k, s in clip_d.items()})
    validate("text_encoder", clip_l, convert_ldm_clip_checkpoint(clip_l), clip_d)

    rows = lambda d: sorted([k, v] for k, v in d.items())  # noqa: E731
    out = {
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__},
        "unet": {"diffusers": rows(unet_d), "ldm": rows(shapes(unet_l))},
        "vae": {"diffusers": rows(vae_d), "ldm": rows(shapes(vae_l))},
        "text_encoder": {"diffusers": rows(clip_d), "ldm": rows(shapes(clip_l))},
        "configs": {
            "unet": json.loads(unet.to_json_string() if hasattr(unet, "to_json_string") else json.dumps(dict(unet.config))),
            "vae": json.loads(vae.to_json_string() if hasattr(vae, "to_json_string") else json.dumps(dict(vae.config))),
            "text_encoder": json.loads(clip.config.to_json_string()),
            "model_index": MODEL_INDEX,
            "scheduler": sd15.SCHEDULER_CONFIG,
        },
    }
    OUT.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print({k: len(out[k]["diffusers"]) for k in ("unet", "vae", "text_encoder")}, OUT.stat().st_size)


if __name__ == "__main__":
    main()
