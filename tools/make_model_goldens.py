#!/usr/bin/env python3
"""Writes the model conformance fixtures under tests/fixtures/models/.

Builds small, randomly initialised CLIPTextModel / UNet2DConditionModel /
AutoencoderKL in several configurations with the reference libraries
(transformers, diffusers), saves each in diffusers layout (config.json +
safetensors weights) and writes `golden.safetensors` next to it: the inputs
the Rust tests feed in and the outputs the reference computed from them. The
library versions and seeds go into the golden's `__metadata__`.

Every parameter is re-drawn from a non-trivial distribution: diffusers zero-
initialises some output layers and default init would hide bugs behind them.

Run from the repository root:
    ref/bin/python tools/make_model_goldens.py
Deterministic (seeded, one torch thread). The fixtures total a few MB.
"""

import math
import os
import sys

import torch
from safetensors.torch import save_file

import diffusers
import transformers
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

torch.set_num_threads(1)
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "models")


def versions(**extra):
    meta = {
        "generator": "tools/make_model_goldens.py",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
    }
    meta.update({k: str(v) for k, v in extra.items()})
    return meta


def randomise(model, seed):
    """Re-draws every parameter: norms' scales around 1 and shifts around 0,
    weights N(0, 1/fan_in), biases N(0, 0.1^2), embeddings N(0, 0.5^2)."""
    g = torch.Generator().manual_seed(seed)
    done = set()
    with torch.no_grad():
        for mname, m in model.named_modules():
            for pname, p in m.named_parameters(recurse=False):
                full = f"{mname}.{pname}" if mname else pname
                if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                    if pname == "weight":
                        v = 1.0 + 0.25 * torch.randn(p.shape, generator=g)
                    else:
                        v = 0.1 * torch.randn(p.shape, generator=g)
                elif isinstance(m, torch.nn.Embedding):
                    v = 0.5 * torch.randn(p.shape, generator=g)
                elif pname == "bias":
                    v = 0.1 * torch.randn(p.shape, generator=g)
                else:
                    fan_in = p[0].numel()
                    v = torch.randn(p.shape, generator=g) / math.sqrt(fan_in)
                p.copy_(v)
                done.add(full)
    missed = {n for n, _ in model.named_parameters()} - done
    assert not missed, f"parameters not randomised: {missed}"


def out_dir(name):
    d = os.path.join(ROOT, name)
    os.makedirs(d, exist_ok=True)
    return d


def save_golden(name, tensors, **meta):
    tensors = {k: v.detach().contiguous().float() for k, v in tensors.items()}
    save_file(tensors, os.path.join(out_dir(name), "golden.safetensors"), metadata=versions(**meta))


# ----- CLIP text encoder ------------------------------------------------------


def make_clip(name, seed, config, text_model_prefix):
    """`text_model_prefix`: save with the `text_model.` key prefix of the
    transformers 4.x files every SD 1.5 checkpoint carries (transformers 5
    saves without it); the loader must accept both."""
    torch.manual_seed(seed)
    model = CLIPTextModel(CLIPTextConfig(**config)).eval()
    randomise(model, seed)
    d = out_dir(name)
    model.save_pretrained(d)
    if text_model_prefix:
        from safetensors.torch import load_file

        path = os.path.join(d, "model.safetensors")
        sd = load_file(path)
        save_file({f"text_model.{k}": v for k, v in sd.items()}, path, metadata={"format": "pt"})

    g = torch.Generator().manual_seed(seed + 1)
    v, n = config["vocab_size"], config["max_position_embeddings"]
    bos, eos = v - 2, v - 1
    ids = []
    for length in (5, 40):
        body = torch.randint(0, v - 2, (length,), generator=g)
        ids.append(torch.cat([torch.tensor([bos]), body, torch.full((n - 1 - length,), eos)]))
    ids = torch.stack(ids)  # [2, 77]
    layers = config["num_hidden_layers"]
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
        last = out.last_hidden_state
        assert len(out.hidden_states) == layers + 1
        # "CLIP skip 2": the penultimate layer's output through the final LayerNorm.
        penultimate = model.final_layer_norm(out.hidden_states[-2])
        # Textual inversion: the token at position 3 of sequence 0 is replaced
        # by a given vector before the position embeddings are added.
        vec = torch.randn(config["hidden_size"], generator=g) * 0.5
        emb = model.embeddings.token_embedding
        hook = emb.register_forward_hook(lambda mod, inp, res: torch.cat(
            [res[:, :3], vec.view(1, 1, -1).expand(res.shape[0], 1, -1), res[:, 4:]], dim=1))
        injected = model(input_ids=ids[:1]).last_hidden_state
        hook.remove()
    save_golden(
        name,
        {
            "ids": ids.float(),  # token ids stored as f32 (exact below 2^24)
            "last_hidden": last,
            "clip_skip2_hidden": penultimate,
            "inject_vector": vec,
            "inject_position": torch.tensor([3.0]),
            "injected_hidden": injected,
        },
        seed=seed,
        text_model_prefix=text_model_prefix,
    )


# ----- UNet ---------------------------------------------------------------------


def make_unet(name, seed, config, latent_hw, context_len, timesteps):
    torch.manual_seed(seed)
    model = UNet2DConditionModel(**config).eval()
    randomise(model, seed)
    model.save_pretrained(out_dir(name))

    g = torch.Generator().manual_seed(seed + 1)
    h, w = latent_hw
    latents = torch.randn(2, config["in_channels"], h, w, generator=g)
    context = torch.randn(2, context_len, config["cross_attention_dim"], generator=g)
    t = torch.tensor(timesteps, dtype=torch.float32)
    with torch.no_grad():
        # A 0-d timestep is broadcast over the batch, as the pipelines pass it.
        noise = model(latents, t[0] if len(timesteps) == 1 else t, encoder_hidden_states=context).sample
    save_golden(
        name,
        {"latents": latents, "timesteps": t, "context": context, "noise_pred": noise},
        seed=seed,
    )


# ----- VAE ----------------------------------------------------------------------


def make_vae(name, seed, config, image_hw, batch, tiled_hw):
    torch.manual_seed(seed)
    model = AutoencoderKL(**config).eval()
    randomise(model, seed)
    model.save_pretrained(out_dir(name))

    g = torch.Generator().manual_seed(seed + 1)
    f = 2 ** (len(config["block_out_channels"]) - 1)
    sf = model.config.scaling_factor
    h, w = image_hw
    image = torch.rand(batch, 3, h, w, generator=g) * 2 - 1
    latents = torch.randn(batch, config["latent_channels"], h // f, w // f, generator=g)
    th, tw = tiled_hw
    tiled_image = torch.rand(1, 3, th, tw, generator=g) * 2 - 1
    tiled_latents = torch.randn(1, config["latent_channels"], th // f, tw // f, generator=g)
    with torch.no_grad():
        post = model.encode(image).latent_dist
        decoded = model.decode(latents / sf).sample
        # diffusers' tiling (enable_tiling): tiles of config.sample_size pixels,
        # a quarter overlap, linear blends, cropped; both inputs exceed a tile.
        model.enable_tiling()
        tiled_post = model.encode(tiled_image).latent_dist
        tiled_decoded = model.decode(tiled_latents / sf).sample
    save_golden(
        name,
        {
            "image": image,
            "mean": post.mean,
            "logvar": post.logvar,
            "latents": latents,
            "decoded": decoded,
            "tiled_image": tiled_image,
            "tiled_mean": tiled_post.mean,
            "tiled_logvar": tiled_post.logvar,
            "tiled_latents": tiled_latents,
            "tiled_decoded": tiled_decoded,
        },
        seed=seed,
    )


def main():
    clip_common = dict(vocab_size=512, max_position_embeddings=77, layer_norm_eps=1e-5,
                       bos_token_id=510, eos_token_id=511, pad_token_id=511)
    make_clip("clip_a", 1, dict(clip_common, hidden_size=32, intermediate_size=80, num_hidden_layers=3,
                                num_attention_heads=4, hidden_act="quick_gelu"), text_model_prefix=True)
    make_clip("clip_b", 2, dict(clip_common, hidden_size=24, intermediate_size=48, num_hidden_layers=2,
                                num_attention_heads=2, hidden_act="gelu"), text_model_prefix=False)

    unet_common = dict(in_channels=4, out_channels=4, norm_num_groups=4, cross_attention_dim=24)
    # SD 1.x topology (three cross-attention levels then a plain one), tiny
    # widths; 6x10 latents (48x80 px) go 3x5 -> 2x3 -> 1x2 and back, so every
    # up-sampler must be told its skip's size.
    make_unet("unet_sd", 3, dict(unet_common, block_out_channels=[8, 16, 16, 16],
                                 down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                                 up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
                                 layers_per_block=2, attention_head_dim=4, sample_size=8),
              latent_hw=(6, 10), context_len=77, timesteps=[981.0])
    # Two cross-attention levels, one layer per block, heads given per level,
    # 9x7 latents (odd on both axes).
    make_unet("unet_two_level", 4, dict(unet_common, block_out_channels=[8, 16, 24],
                                        down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                                          "DownBlock2D"],
                                        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
                                        layers_per_block=1, attention_head_dim=[2, 4, 4], sample_size=8),
              latent_hw=(9, 7), context_len=77, timesteps=[500.5, 20.0])
    # Linear projections (SD 2.x style), two transformer layers per block,
    # the other sinusoid layout, and a two-chunk (154-token) context.
    make_unet("unet_linear", 5, dict(unet_common, block_out_channels=[16, 24],
                                     down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                                     up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
                                     layers_per_block=2, attention_head_dim=4, use_linear_projection=True,
                                     transformer_layers_per_block=2, flip_sin_to_cos=False, freq_shift=1,
                                     sample_size=8),
              latent_hw=(8, 6), context_len=154, timesteps=[999.0])

    # VAEs: sample_size sets diffusers' tile size (tiny here so tiling runs).
    make_vae("vae_a", 6, dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[8, 16, 16],
                              down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
                              layers_per_block=1, norm_num_groups=4, sample_size=16),
             image_hw=(20, 28), batch=1, tiled_hw=(40, 56))
    make_vae("vae_b", 7, dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[8, 16],
                              down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                              layers_per_block=2, norm_num_groups=4, sample_size=16),
             image_hw=(12, 18), batch=2, tiled_hw=(30, 26))


if __name__ == "__main__":
    main()
