#!/usr/bin/env python3
"""Writes the VAE-override conformance fixtures under tests/fixtures/vae/.

1. A second random VAE for the small pipeline model of
   tests/fixtures/pipeline/model (same architecture as its VAE, other
   weights: tools/make_model_goldens.py's `randomise` with another seed, the
   decoder output rescaled as tools/make_pipeline_goldens.py does, rounded to
   float16), saved in the forms users have:
   - `vae_diffusers/`: a diffusers `vae/` folder (config.json + f16 safetensors);
   - `tiny-vae.safetensors`: a standalone VAE with the original LDM names
     (`encoder.down.0.block.0...`, `decoder.up.3...`, the mid-block attention
     as 1x1 convolutions), as `vae-ft-mse-840000-ema-pruned.safetensors`;
   - `tiny-vae.ckpt`: the same as a torch pickle, `{"state_dict": ...}` with a
     `loss.logvar` entry as VAE training checkpoints have (A1111 drops `loss*`);
   - `tiny-full.safetensors`: laid out as a full single-file checkpoint: the VAE
     under `first_stage_model.`, next to `model.diffusion_model.*` and
     `cond_stage_model.transformer.*` tensors (a few of the pipeline model's,
     not all: only the VAE is read from it, and the fixture stays small).
   Each file is checked here by loading it back with diffusers'
   `AutoencoderKL.from_single_file` (config: `vae_diffusers/`) and comparing
   every weight with the VAE's, exactly.
2. Goldens: diffusers' StableDiffusionPipeline / StableDiffusionImg2ImgPipeline
   on the pipeline model with its VAE replaced by this one (`vae=`), as
   tools/make_pipeline_goldens.py (CPU generator per image, float32 compute
   from the f16-rounded weights, output_type "np"): `goldens.safetensors`
   holds the float images `[B, H, W, 3]` in [0, 1], `cases.json` the
   parameters and library versions. Each case is also run with the model's own
   VAE, to check that the swap changes the image clearly (else the test would
   say little).

Run from the repository root:
    ref/bin/python tools/make_vae_goldens.py
Deterministic (seeded, one torch thread); about a minute on one core.
"""

import json
import os
import shutil
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from diffusers import (
    AutoencoderKL,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextModel, CLIPTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_model_goldens import randomise  # noqa: E402
from make_pipeline_goldens import (  # noqa: E402
    CFG,
    NEGATIVE,
    PROMPT,
    SD15_SCHEDULER,
    SEED,
    STEPS,
    rescale_output,
    scheduler_for,
    versions as pipeline_versions,
)

torch.set_num_threads(1)
REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PIPELINE = os.path.join(REPO, "tests", "fixtures", "pipeline")
MODEL = os.path.join(PIPELINE, "model")
OUT = os.path.join(REPO, "tests", "fixtures", "vae")
FOLDER = os.path.join(OUT, "vae_diffusers")

# name, mode, sampler, width, height, extra parameters (as tools/make_pipeline_goldens.py).
CASES = [
    ("vae_txt2img_ddim", "txt2img", "ddim", 64, 64, {}),
    ("vae_txt2img_euler_a_wide", "txt2img", "euler-a", 80, 48, {}),
    # img2img runs the replaced VAE's encoder too.
    ("vae_img2img_euler_a", "img2img", "euler-a", 64, 64, {"strength": 0.75}),
]


def versions():
    return dict(pipeline_versions(), generator="tools/make_vae_goldens.py")


def build_vae(config):
    """The second VAE: the model's architecture, other random weights."""
    vae = AutoencoderKL.from_config(config).eval()
    randomise(vae, 31)
    g = torch.Generator().manual_seed(98)
    captured = {}
    hook = vae.decoder.conv_out.register_forward_pre_hook(lambda m, a: captured.update(x=a[0]))
    with torch.no_grad():
        vae.decode(torch.randn(1, 4, 8, 8, generator=g))
    hook.remove()
    rescale_output(vae.decoder.conv_out, 0.45, captured["x"])
    return vae.half().float()


def ldm_name(name, levels):
    """The original (LDM) name of the diffusers VAE parameter `name`, and
    whether it is a linear stored as a 1x1 convolution in LDM files. Written
    from the layout of diffusers' AutoencoderKL and LDM's Encoder/Decoder;
    from_single_file checks it below."""
    p = name.split(".")
    part = p[0]
    if part in ("quant_conv", "post_quant_conv"):
        return name, False
    rest = p[1:]
    if rest[0] in ("conv_in", "conv_out"):
        return name, False
    if rest[0] == "conv_norm_out":
        return ".".join([part, "norm_out"] + rest[1:]), False
    if rest[0] == "mid_block":
        kind, idx, tail = rest[1], int(rest[2]), rest[3:]
        if kind == "resnets":
            return ".".join([part, "mid", f"block_{idx + 1}"] + tail), False
        layer = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}[tail[0]]
        leaf = tail[2:] if tail[0] == "to_out" else tail[1:]
        return ".".join([part, "mid", "attn_1", layer] + leaf), layer != "norm" and leaf == ["weight"]
    blocks, i = rest[0], int(rest[1])
    level = i if part == "encoder" else levels - 1 - i
    direction = "down" if part == "encoder" else "up"
    if rest[2] == "resnets":
        tail = ["nin_shortcut" if t == "conv_shortcut" else t for t in rest[4:]]
        return ".".join([part, direction, str(level), "block", rest[3]] + tail), False
    assert rest[2] in ("downsamplers", "upsamplers") and rest[4] == "conv", name
    sampler = "downsample" if part == "encoder" else "upsample"
    return ".".join([part, direction, str(level), sampler, "conv"] + rest[5:]), False


def ldm_state_dict(vae):
    levels = len(vae.config.block_out_channels)
    out = {}
    for name, t in vae.state_dict().items():
        new, conv = ldm_name(name, levels)
        t = t.detach().clone().half()
        out[new] = t[:, :, None, None] if conv else t
    assert len(out) == len(vae.state_dict())
    return out


def check_single_file(path, vae):
    """diffusers reads the file back to exactly the VAE's weights."""
    back = AutoencoderKL.from_single_file(path, config=FOLDER, torch_dtype=torch.float32)
    want, got = vae.state_dict(), back.state_dict()
    assert set(want) == set(got), (path, set(want) ^ set(got))
    for k in want:
        assert torch.equal(want[k], got[k]), (path, k)
    print(f"{os.path.basename(path)}: from_single_file gives the same {len(want)} tensors")


def save_forms(vae):
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(os.path.join(OUT, "ref"))
    vae.half().save_pretrained(FOLDER, safe_serialization=True)
    vae.float()
    ldm = ldm_state_dict(vae)
    path = os.path.join(OUT, "tiny-vae.safetensors")
    save_file(ldm, path, metadata={"format": "pt"})
    check_single_file(path, vae)

    path = os.path.join(OUT, "tiny-vae.ckpt")
    torch.save({"state_dict": dict(ldm, **{"loss.logvar": torch.zeros(())})}, path)
    check_single_file(path, vae)

    # A full checkpoint's layout; a few UNet / text-encoder tensors (LDM names) beside the VAE.
    unet = load_file(os.path.join(MODEL, "unet", "diffusion_pytorch_model.safetensors"))
    text = load_file(os.path.join(MODEL, "text_encoder", "model.safetensors"))
    full = {f"first_stage_model.{k}": v for k, v in ldm.items()}
    for ldm_key, key in [
        ("input_blocks.0.0.weight", "conv_in.weight"),
        ("input_blocks.0.0.bias", "conv_in.bias"),
        ("time_embed.0.weight", "time_embedding.linear_1.weight"),
        ("out.2.weight", "conv_out.weight"),
        ("input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
         "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"),
    ]:
        full[f"model.diffusion_model.{ldm_key}"] = unet[key].clone()
    for key in [k for k in text if "final_layer_norm" in k]:
        inner = key[len("text_model."):] if key.startswith("text_model.") else key
        full[f"cond_stage_model.transformer.text_model.{inner}"] = text[key].clone()
    path = os.path.join(OUT, "tiny-full.safetensors")
    save_file(full, path, metadata={"format": "pt"})
    check_single_file(path, vae)


def load_pipeline():
    """The pipeline model exactly as tools/make_pipeline_goldens.py builds it (f16 values in f32)."""
    tokenizer = CLIPTokenizer(
        os.path.join(REPO, "assets", "clip", "vocab.json"),
        os.path.join(REPO, "assets", "clip", "merges.txt"),
        model_max_length=77,
        pad_token="<|endoftext|>",
    )
    f32 = dict(torch_dtype=torch.float32)
    return dict(
        text_encoder=CLIPTextModel.from_pretrained(os.path.join(MODEL, "text_encoder"), **f32).eval(),
        unet=UNet2DConditionModel.from_pretrained(os.path.join(MODEL, "unet"), **f32).eval(),
        vae=AutoencoderKL.from_pretrained(os.path.join(MODEL, "vae"), **f32).eval(),
        tokenizer=tokenizer,
        safety_checker=None,
        feature_extractor=None,
    )


def run_case(components, mode, sampler, width, height, extra, inputs):
    components = dict(components, scheduler=scheduler_for(sampler))
    args = dict(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        num_inference_steps=STEPS,
        guidance_scale=CFG,
        generator=[torch.Generator().manual_seed(SEED)],
        output_type="np",
    )
    with torch.no_grad():
        if mode == "txt2img":
            p = StableDiffusionPipeline(**components, requires_safety_checker=False)
            p.set_progress_bar_config(disable=True)
            out = p(height=height, width=width, **args).images
        else:
            p = StableDiffusionImg2ImgPipeline(**components, requires_safety_checker=False)
            p.set_progress_bar_config(disable=True)
            out = p(image=inputs, strength=extra["strength"], **args).images
    return p, np.asarray(out, dtype=np.float32)  # [1, H, W, 3] in [0, 1]


def psnr(a, b):
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else -10 * np.log10(mse)


def main():
    base = load_pipeline()
    vae = build_vae(base["vae"].config)
    save_forms(vae)
    swapped = dict(base, vae=AutoencoderKL.from_pretrained(FOLDER, torch_dtype=torch.float32).eval())
    image = Image.open(os.path.join(PIPELINE, "input.png")).convert("RGB")

    goldens, cases = {}, []
    for name, mode, sampler, width, height, extra in CASES:
        p, out = run_case(swapped, mode, sampler, width, height, extra, image)
        _, own = run_case(base, mode, sampler, width, height, extra, image)
        assert out.shape == (1, height, width, 3), out.shape
        saturated = float(np.mean((out <= 0.0) | (out >= 1.0)))
        apart = psnr(out, own)
        print(f"{name}: mean {out.mean():.3f} std {out.std():.3f} saturated {saturated:.1%}, "
              f"{apart:.1f} dB from the model's own VAE")
        assert saturated < 0.2, "mostly saturated image: the comparison would be weak"
        assert apart < 30, "the replaced VAE barely changes the image: the test would say little"
        goldens[name] = torch.from_numpy(out.copy())
        p.numpy_to_pil(out)[0].save(os.path.join(OUT, "ref", f"{name}.png"))
        case = dict(name=name, mode=mode, sampler=sampler, width=width, height=height, steps=STEPS,
                    cfg_scale=CFG, seed=SEED, batch=1, prompt=PROMPT, negative_prompt=NEGATIVE,
                    clip_skip=1, saturated_fraction=saturated, psnr_vs_model_vae=apart)
        if mode == "img2img":
            case["image"] = "input.png"
            case["strength"] = extra["strength"]
        cases.append(case)
    save_file(goldens, os.path.join(OUT, "goldens.safetensors"), metadata=versions())
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(dict(versions=versions(), scheduler=SD15_SCHEDULER["_class_name"], cases=cases), f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
