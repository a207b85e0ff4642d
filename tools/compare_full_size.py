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
With `--single-file`, also writes `<out>/sd15-random-ldm.safetensors`: the
same weights under the original (LDM / CompVis) names with the three
prefixes of an SD 1.5 single file (plus the schedule buffers such files
carry). The names are mapped here, independently of the Rust loader's key
map so that the comparison checks that map too, and verified by running
the reference's own LDM -> diffusers converters on the file's contents.

With `--lora`, also writes `<out>/sd15-random-lora.safetensors`: a random
kohya LoRA (LoCon) on every linear and convolution of the text encoder's
layers and of the UNet but `conv_in` / `conv_out` / the time embedding (rank
16 for linears, 8 for convolutions, alpha 8, f16), merges it into the models
with diffusers' `load_lora_weights` + `fuse_lora(lora_scale=LORA_WEIGHT)` and
writes `<out>/golden_lora_<size>.safetensors` from the merged models, after
checking that diffusers' merged weights are W + 0.7 * alpha / rank * up @ down.

Then `cargo run --release --example compare_full_size -- <out>` runs ours
(add `--checkpoint <out>/sd15-random-ldm.safetensors` for the single file,
`--lora <out>/sd15-random-lora.safetensors:0.7` for the LoRA goldens).

Measured with one torch thread on a shared 2-core EPYC VM (both sizes and
`--single-file`): 2.2 minutes, 7.3 GB peak RSS, 2.1 GB of disk for the
folder and 2.0 GB for the single file. Results: docs/conformance.md, "Full-size SD 1.5 comparison".

    python tools/compare_full_size.py --out /tmp/sd15-random --sizes 256,512 --single-file
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
import peft
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


# diffusers -> LDM names, written from the tables of docs/formats.md and checked against
# the reference's own LDM -> diffusers converter (`check_single_file`); the
# Rust loader's map (src/checkpoint/ldm.rs) is not consulted.
UNET_FIXED = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
              "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
               "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}


def ldm_unet(name, per=3):
    """diffusers UNet name -> LDM name (`per` = layers_per_block + 1 slots a level)."""
    for old, new in UNET_FIXED.items():
        if name.startswith(old + "."):
            return new + name[len(old):]
    p = name.split(".")

    def resnet(layer):  # [norm1, weight] -> in_layers.0.weight
        return UNET_RESNET[layer[0]] + "." + ".".join(layer[1:])

    if p[0] == "mid_block":  # mid_block.resnets.k.<layer> / mid_block.attentions.0.<rest>
        if p[1] == "resnets":
            return f"middle_block.{2 * int(p[2])}.{resnet(p[3:])}"
        return "middle_block.1." + ".".join(p[3:])
    i, kind, rest = int(p[1]), p[2], p[4:]  # <blocks>.i.<kind>.j.<rest>
    if p[0] == "down_blocks":
        if kind == "downsamplers":  # rest = conv.<leaf>
            return f"input_blocks.{per * (i + 1)}.0.op." + ".".join(rest[1:])
        slot = f"input_blocks.{per * i + int(p[3]) + 1}"
    elif p[0] == "up_blocks":
        if kind == "upsamplers":  # rest = conv.<leaf>
            return f"output_blocks.{per * i + per - 1}.{1 if i == 0 else 2}.conv." + ".".join(rest[1:])
        slot = f"output_blocks.{per * i + int(p[3])}"
    else:
        raise KeyError(f"no LDM name for UNet parameter {name}")
    return f"{slot}.0.{resnet(rest)}" if kind == "resnets" else f"{slot}.1." + ".".join(rest)


def ldm_vae(name, tensor, levels=4):
    """diffusers VAE name -> (LDM name, tensor); the mid-block attention's
    linears become 1x1 convolutions."""
    part, *rest = name.split(".")
    if part in ("quant_conv", "post_quant_conv") or rest[0] in ("conv_in", "conv_out"):
        return name, tensor
    if rest[0] == "conv_norm_out":
        return f"{part}.norm_out." + ".".join(rest[1:]), tensor
    if rest[0] == "mid_block":
        if rest[1] == "resnets":  # mid_block.resnets.k.<leaf>
            return f"{part}.mid.block_{int(rest[2]) + 1}." + ".".join(rest[3:]), tensor
        t = tensor.reshape(*tensor.shape, 1, 1) if tensor.ndim == 2 else tensor
        return f"{part}.mid.attn_1.{VAE_ATTENTION[rest[3]]}.{rest[-1]}", t
    i = int(rest[1])
    block, level = ("down", i) if rest[0] == "down_blocks" else ("up", levels - 1 - i)
    if rest[2] == "resnets":  # <blocks>.i.resnets.j.<layer>.<leaf>
        layer = "nin_shortcut" if rest[4] == "conv_shortcut" else rest[4]
        return f"{part}.{block}.{level}.block.{rest[3]}.{layer}." + ".".join(rest[5:]), tensor
    sampler = "downsample" if block == "down" else "upsample"  # <blocks>.i.<sampler>s.0.conv.<leaf>
    return f"{part}.{block}.{level}.{sampler}.conv." + ".".join(rest[5:]), tensor


def schedule_buffers():
    """The non-weight tensors an SD 1.5 single file carries next to the
    weights (the LDM DDPM schedule, EMA bookkeeping): a loader must ignore them."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    ac = torch.cumprod(1 - betas, 0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    return {"betas": betas.float(), "alphas_cumprod": ac.float(), "alphas_cumprod_prev": prev.float(),
            "sqrt_alphas_cumprod": ac.sqrt().float(), "model_ema.decay": torch.tensor(0.9999),
            "model_ema.num_updates": torch.tensor(0, dtype=torch.int32)}


def write_single_file(models, out):
    """The three models in one file under LDM names and the three prefixes,
    weights in f16 like the SD 1.5 files on the hub."""
    sd = schedule_buffers()
    for k, v in models["unet"].state_dict().items():
        sd["model.diffusion_model." + ldm_unet(k)] = v.half()
    for k, v in models["vae"].state_dict().items():
        name, t = ldm_vae(k, v)
        sd["first_stage_model." + name] = t.half().contiguous()
    for k, v in models["text_encoder"].state_dict().items():
        sd["cond_stage_model.transformer.text_model." + k] = v.half()
    # Stored as int64 [1, 77] by transformers 4 (the loader ignores it).
    sd["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77).view(1, 77)
    check_single_file(sd, models)
    path = os.path.join(out, "sd15-random-ldm.safetensors")
    save_file(sd, path, metadata={"generator": "tools/compare_full_size.py", "torch": torch.__version__,
                                  "diffusers": diffusers.__version__})
    print(f"wrote {path} ({len(sd)} tensors)", flush=True)


def check_single_file(sd, models):
    """The reference's LDM -> diffusers converters must give back exactly the
    diffusers weights: proof that the file is a genuine LDM layout."""
    from diffusers.loaders import single_file_utils as sfu
    converted = {
        "unet": sfu.convert_ldm_unet_checkpoint(sd, models["unet"].config),
        "vae": sfu.convert_ldm_vae_checkpoint(sd, models["vae"].config),
        "text_encoder": {k.removeprefix("text_model."): v for k, v in sfu.convert_ldm_clip_checkpoint(sd).items()
                         if not k.endswith("position_ids")},
    }
    for name, got in converted.items():
        want = models[name].state_dict()
        if set(got) != set(want):
            sys.exit(f"single file, {name}: the reference converter's keys differ: missing "
                     f"{sorted(set(want) - set(got))[:5]}, unexpected {sorted(set(got) - set(want))[:5]}")
        bad = [k for k in want if got[k].shape != want[k].shape or not torch.equal(got[k].float(), want[k])]
        if bad:
            sys.exit(f"single file, {name}: {len(bad)} tensors differ after conversion, e.g. {bad[:5]}")
    print("single file: the reference converter maps every tensor back to the diffusers weights", flush=True)


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


LORA_WEIGHT = 0.7
LORA_ALPHA = 8.0


def lora_targets(models):
    """(part, kohya prefix, module name, module) of every layer the LoRA changes."""
    out = []
    for part, prefix in (("text_encoder", "lora_te_"), ("unet", "lora_unet_")):
        for name, m in models[part].named_modules():
            if not isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                continue
            if part == "text_encoder" and "encoder.layers." not in name:
                continue
            if part == "unet" and (name in ("conv_in", "conv_out") or name.startswith("time_embedding")):
                continue
            # kohya names the text encoder's modules as transformers 4 does (`text_model.` first).
            full = name if part == "unet" or name.startswith("text_model.") else f"text_model.{name}"
            out.append((part, prefix + full.replace(".", "_"), name, m))
    return out


def write_lora(models, out):
    """A random kohya LoRA, each delta about 10% of its weight; returns the file's name."""
    g = torch.Generator().manual_seed(77)
    sd = {}
    for part, key, name, m in lora_targets(models):
        w = m.weight
        conv = w.dim() == 4
        r = 8 if conv else 16
        down = torch.randn((r,) + tuple(w.shape[1:]), generator=g)
        up = torch.randn((w.shape[0], r) + ((1, 1) if conv else ()), generator=g)
        delta = up.reshape(w.shape[0], r) @ down.reshape(r, -1)
        k = (0.1 * w.norm() / (LORA_ALPHA / r * delta.norm())).sqrt().item()
        sd[f"{key}.lora_down.weight"] = (down * k).half()
        sd[f"{key}.lora_up.weight"] = (up * k).half()
        sd[f"{key}.alpha"] = torch.tensor(LORA_ALPHA, dtype=torch.float16)
    name = "sd15-random-lora.safetensors"
    save_file(sd, os.path.join(out, name), metadata={"generator": "tools/compare_full_size.py",
                                                     "torch": torch.__version__, "peft": peft.__version__})
    print(f"wrote {name} ({len(sd) // 3} layers)", flush=True)
    return name, sd


def fuse_lora(models, out, name, sd):
    """diffusers' merge, in place; checked against kohya's meaning of the file."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer
    repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    targets = lora_targets(models)
    before = {key: m.weight.detach().clone() for _, key, _, m in targets}
    pipe = StableDiffusionPipeline(
        vae=models["vae"], text_encoder=models["text_encoder"], unet=models["unet"],
        tokenizer=CLIPTokenizer(os.path.join(repo, "assets/clip/vocab.json"),
                                os.path.join(repo, "assets/clip/merges.txt")),
        scheduler=PNDMScheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.load_lora_weights(out, weight_name=name, adapter_name="random")
    pipe.fuse_lora(lora_scale=LORA_WEIGHT)
    pipe.unload_lora_weights()
    worst = 0.0
    for _, key, _, m in targets:
        w0 = before[key]
        down, up = sd[f"{key}.lora_down.weight"].float(), sd[f"{key}.lora_up.weight"].float()
        r = down.shape[0]
        want = w0 + LORA_WEIGHT * LORA_ALPHA / r * (up.reshape(-1, r) @ down.reshape(r, -1)).reshape(w0.shape)
        err = ((m.weight - want).abs().max() / want.abs().max()).item()
        worst = max(worst, err)
        if err > 1e-5:
            sys.exit(f"LoRA: diffusers merged {key} to other weights than W + w * alpha / r * up @ down ({err:.2e})")
    print(f"LoRA: diffusers' merge checked on {len(targets)} layers (largest relative difference {worst:.1e})",
          flush=True)


def run(models, out, size, name="golden"):
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
              os.path.join(out, f"{name}_{size}.safetensors"), metadata=meta)
    print(f"{size}x{size}: reference timings (s) {meta['timings_s']}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (diffusers layout + goldens)")
    ap.add_argument("--sizes", default="256,512", help="comma-separated image sizes (multiples of 8)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--single-file", action="store_true", help="also write the LDM-named single file")
    ap.add_argument("--lora", action="store_true", help="also write a random LoRA and goldens with it merged")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    models = build(a.out)
    if a.single_file:
        write_single_file(models, a.out)
    for s in [int(x) for x in a.sizes.split(",") if x]:
        if s % 8:
            sys.exit(f"--sizes: {s} is not a multiple of 8")
        run(models, a.out, s)
    if a.lora:
        name, sd = write_lora(models, a.out)
        fuse_lora(models, a.out, name, sd)
        for s in [int(x) for x in a.sizes.split(",") if x]:
            run(models, a.out, s, name="golden_lora")


if __name__ == "__main__":
    main()
