#!/usr/bin/env python3
"""Full-size SD 1.5 comparison, reference side (opt-in; too big for CI).

Builds the SD 1.5 architecture (CLIP-L text encoder, UNet, VAE) with seeded
random weights, saves it as a diffusers folder (weights stored in f16, the
way SD 1.5 files ship; the reference runs in f32 on exactly those values),
then for each requested image size runs the reference on fixed inputs and
writes inputs and outputs to `<out>/golden_<size>.safetensors`:
  text encoder: ids [2, 77] -> last hidden state and CLIP-skip-2 state;
  UNet: latents [2, 4, s/8, s/8], timestep 981, context [2, 77, 768] (the
        reference encoder's output for the two prompts) -> noise prediction;
  VAE: latents [1, 4, s/8, s/8] -> decoded image; image [1, 3, s, s] ->
       posterior mean and logvar.
Then `cargo run --release --example compare_full_size -- <out>` runs ours.

The single-file (LDM key names) copy is not written: the LDM -> diffusers key
map lives in the checkpoint loaders, not on main when this was written.

Needs about 10 GB of RAM at 512x512, 1.8 GB of disk; with one torch thread,
about 2 minutes at 256x256 and 5-10 at 512x512 on a desktop CPU.

    /work/refenv/bin/python tools/compare_full_size.py --out /tmp/sd15-random --sizes 256,512
"""

import argparse
import json
import math
import os
import sys
import time

import torch
from safetensors.torch import save_file

import diffusers
import transformers
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=[320, 640, 1280, 1280],
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    cross_attention_dim=768, attention_head_dim=8,
)
VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
)
CLIP = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
    num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
    bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
)


def randomise(model, seed):
    """Same scheme as tools/make_model_goldens.py, then rounded to f16 (the
    stored precision) so both sides use identical values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, m in model.named_modules():
            for pname, p in m.named_parameters(recurse=False):
                if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                    v = 1.0 + 0.25 * torch.randn(p.shape, generator=g) if pname == "weight" \
                        else 0.1 * torch.randn(p.shape, generator=g)
                elif isinstance(m, torch.nn.Embedding):
                    v = 0.5 * torch.randn(p.shape, generator=g)
                elif pname == "bias":
                    v = 0.1 * torch.randn(p.shape, generator=g)
                else:
                    v = torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel())
                p.copy_(v.half().float())


def build(out):
    models = {}
    for name, cls, cfg, seed in [("text_encoder", None, CLIP, 11), ("unet", UNet2DConditionModel, UNET, 12),
                                 ("vae", AutoencoderKL, VAE, 13)]:
        torch.manual_seed(seed)
        m = CLIPTextModel(CLIPTextConfig(**cfg)) if cls is None else cls(**cfg)
        m.eval()
        randomise(m, seed)
        d = os.path.join(out, name)
        if not os.path.exists(os.path.join(d, "config.json")):
            m.half().save_pretrained(d)
            m.float()
        models[name] = m
        print(f"{name}: {sum(p.numel() for p in m.parameters()) / 1e6:.1f} M parameters", flush=True)
    return models


def run(models, out, size):
    g = torch.Generator().manual_seed(size)
    s8 = size // 8
    ids = torch.full((2, 77), 49407, dtype=torch.long)
    ids[:, 0] = 49406
    ids[1, 1:12] = torch.randint(0, 49406, (11,), generator=g)
    tensors = {"ids": ids.float()}
    timings = {}
    with torch.no_grad():
        t = time.time()
        out_clip = models["text_encoder"](input_ids=ids, output_hidden_states=True)
        tensors["clip_last"] = out_clip.last_hidden_state
        tensors["clip_skip2"] = models["text_encoder"].final_layer_norm(out_clip.hidden_states[-2])
        timings["clip"] = time.time() - t

        tensors["unet_latents"] = torch.randn(2, 4, s8, s8, generator=g)
        tensors["unet_timestep"] = torch.tensor([981.0])
        tensors["unet_context"] = tensors["clip_last"].clone()
        t = time.time()
        tensors["unet_noise"] = models["unet"](tensors["unet_latents"], 981.0,
                                               encoder_hidden_states=tensors["unet_context"]).sample
        timings["unet"] = time.time() - t

        vae = models["vae"]
        sf = vae.config.scaling_factor
        tensors["vae_latents"] = torch.randn(1, 4, s8, s8, generator=g)
        t = time.time()
        tensors["vae_decoded"] = vae.decode(tensors["vae_latents"] / sf).sample
        timings["vae_decode"] = time.time() - t
        tensors["vae_image"] = torch.rand(1, 3, size, size, generator=g) * 2 - 1
        t = time.time()
        post = vae.encode(tensors["vae_image"]).latent_dist
        timings["vae_encode"] = time.time() - t
        tensors["vae_mean"], tensors["vae_logvar"] = post.mean, post.logvar
    meta = {"torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "size": str(size),
            "timings_s": json.dumps({k: round(v, 2) for k, v in timings.items()}),
            "generator": "tools/compare_full_size.py"}
    save_file({k: v.contiguous().float() for k, v in tensors.items()},
              os.path.join(out, f"golden_{size}.safetensors"), metadata=meta)
    print(f"{size}x{size}: reference timings (s) {meta['timings_s']}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (diffusers layout + goldens)")
    ap.add_argument("--sizes", default="256,512", help="comma-separated image sizes (multiples of 8)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    models = build(a.out)
    for s in [int(x) for x in a.sizes.split(",")]:
        if s % 8:
            sys.exit(f"--sizes: {s} is not a multiple of 8")
        run(models, a.out, s)


if __name__ == "__main__":
    main()
