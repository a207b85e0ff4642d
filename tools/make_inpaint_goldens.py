#!/usr/bin/env python3
"""Writes the inpainting conformance fixtures under tests/fixtures/inpaint/.

1. `unet9/`: a 9-channel inpainting UNet (diffusers `UNet2DConditionModel`, `in_channels: 9`)
   of the same tiny SD 1.x architecture as tests/fixtures/pipeline/model's UNet, re-drawn with
   tools/make_model_goldens.py's `randomise`, its output rescaled to unit variance, stored as
   f16 safetensors. It is paired with the pipeline fixture's text encoder, tokenizer, VAE and
   scheduler config (the tests assemble the folder, so those files are not duplicated);
   `model_index.json` names `StableDiffusionInpaintPipeline` as a diffusers inpainting folder does.
2. Masks (white = repaint): `mask_rect.png` (64x64, mode L, a hard rectangle),
   `mask_soft.png` (64x64, RGB, a soft-edged disc whose channels differ, so the conversion to
   one channel and the binarisation at 0.5 are both exercised), `mask_wide.png` (80x48, L).
   The input images are the pipeline fixture's `input.png` / `input_wide.png`.
3. For each case of CASES, diffusers' `StableDiffusionInpaintPipeline` with a CPU
   `torch.Generator().manual_seed(seed)`, output_type "np": `goldens.safetensors` holds the
   decoded float images `[1, H, W, 3]` in [0, 1]; `ref/<case>.png` the 8-bit images. Cases run
   both the 9-channel UNet and the pipeline fixture's 4-channel UNet (diffusers' blend of the
   noised original outside the mask), strength 1 and below, several samplers, guidance off,
   a wide size, and a mask blurred by diffusers' `mask_processor.blur` (PIL's GaussianBlur).
4. `blur/<mask>_<radius>` in goldens.safetensors: the 8-bit single-channel masks after PIL's
   `ImageFilter.GaussianBlur(radius)` (what `mask_processor.blur` does), stored as f32 0..255,
   so the blur itself is checked value for value; `luma/mask_soft`: PIL's `convert("L")`.
   `cases.json` lists every case's parameters and the library versions.

Run from the repository root:
    /work/refenv/bin/python tools/make_inpaint_goldens.py
Deterministic (seeded, one torch thread); about a minute on one core.
"""

import json
import os
import shutil
import sys
import tempfile

import numpy as np
import PIL
import torch
from PIL import Image, ImageFilter
from safetensors.torch import save_file

import diffusers
import transformers
from diffusers import (
    AutoencoderKL,
    HeunDiscreteScheduler,
    StableDiffusionInpaintPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextModel, CLIPTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_model_goldens import randomise  # noqa: E402
from make_pipeline_goldens import SAMPLERS, SD15_SCHEDULER, rescale_output, scheduler_for  # noqa: E402

torch.set_num_threads(1)
# Heun too: the blend re-noises at the sigma of the call that follows, and Heun's calls
# interleave two per step. (LMS would need scipy, which the reference environment lacks.)
SAMPLERS.update({"heun": (HeunDiscreteScheduler, {})})
REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PIPE = os.path.join(REPO, "tests", "fixtures", "pipeline")
BASE = os.path.join(PIPE, "model")
OUT = os.path.join(REPO, "tests", "fixtures", "inpaint")
UNET9 = os.path.join(OUT, "unet9")

PROMPT = "a red fox sitting in the snow, highly detailed"
NEGATIVE = "blurry, low quality"
STEPS = 10
CFG = 7.5
SEED = 1234

# name, unet ("9" or "4"), sampler, strength, mask, extra parameters.
CASES = [
    ("inpaint9_ddim", "9", "ddim", 1.0, "mask_rect.png", {}),
    ("inpaint9_euler_a_soft", "9", "euler-a", 1.0, "mask_soft.png", {}),
    ("inpaint9_dpmpp_2m_karras_strength", "9", "dpm++2m-karras", 0.7, "mask_rect.png", {}),
    ("inpaint9_pndm_blur", "9", "pndm", 1.0, "mask_rect.png", {"blur": 4}),
    ("inpaint9_euler_cfg1", "9", "euler", 1.0, "mask_soft.png", {"cfg": 1.0, "negative": ""}),
    ("inpaint9_euler_a_wide", "9", "euler-a", 0.8, "mask_wide.png", {}),
    ("inpaint4_ddim", "4", "ddim", 1.0, "mask_rect.png", {}),
    ("inpaint4_euler_a_soft", "4", "euler-a", 1.0, "mask_soft.png", {}),
    ("inpaint4_dpmpp_2m_karras_strength", "4", "dpm++2m-karras", 0.6, "mask_rect.png", {}),
    ("inpaint4_pndm_strength", "4", "pndm", 0.75, "mask_soft.png", {"seed": 99}),
    ("inpaint4_heun_strength", "4", "heun", 0.8, "mask_rect.png", {}),
]
BLUR_RADII = [1, 2, 4, 7, 50]


def versions():
    return {
        "generator": "tools/make_inpaint_goldens.py",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "python": sys.version.split()[0],
    }


def base_components():
    """The pipeline fixture's networks, from its f16 files, computing in f32."""
    text_encoder = CLIPTextModel.from_pretrained(os.path.join(BASE, "text_encoder"), torch_dtype=torch.float32)
    vae = AutoencoderKL.from_pretrained(os.path.join(BASE, "vae"), torch_dtype=torch.float32)
    unet4 = UNet2DConditionModel.from_pretrained(os.path.join(BASE, "unet"), torch_dtype=torch.float32)
    tokenizer = CLIPTokenizer(
        os.path.join(REPO, "assets", "clip", "vocab.json"),
        os.path.join(REPO, "assets", "clip", "merges.txt"),
        model_max_length=77,
        pad_token="<|endoftext|>",
    )
    for m in (text_encoder, vae, unet4):
        m.eval()
    return text_encoder, vae, unet4, tokenizer


def build_unet9(unet4):
    """The 4-channel UNet's architecture with 9 input channels, freshly randomised."""
    config = {k: v for k, v in unet4.config.items() if not k.startswith("_")}
    config["in_channels"] = 9
    unet = UNet2DConditionModel.from_config(config).eval()
    randomise(unet, 14)
    g = torch.Generator().manual_seed(98)
    captured = {}
    hook = unet.conv_out.register_forward_pre_hook(lambda m, a: captured.update(x=a[0]))
    with torch.no_grad():
        unet(torch.randn(1, 9, 8, 8, generator=g), torch.tensor(981.0),
             encoder_hidden_states=torch.randn(1, 77, 32, generator=g))
    hook.remove()
    rescale_output(unet.conv_out, 1.0, captured["x"])
    unet.half().float()
    return unet


def save_unet9(unet):
    if os.path.isdir(UNET9):
        shutil.rmtree(UNET9)
    unet.to(torch.float16)
    unet.save_pretrained(UNET9, safe_serialization=True)
    unet.to(torch.float32)
    # A diffusers inpainting folder's model_index.json: written by save_pretrained of the whole
    # pipeline, with this folder's components.
    with tempfile.TemporaryDirectory() as tmp:
        text_encoder, vae, _, tokenizer = base_components()
        pipe = StableDiffusionInpaintPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
            scheduler=scheduler_for("pndm"), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(tmp, safe_serialization=True)
        shutil.copyfile(os.path.join(tmp, "model_index.json"), os.path.join(OUT, "model_index.json"))


def make_masks():
    masks = {}
    # Hard rectangle, mode L.
    m = np.zeros((64, 64), np.uint8)
    m[20:52, 16:48] = 255
    masks["mask_rect.png"] = Image.fromarray(m, "L")
    # Soft-edged disc over 10 pixels, RGB with unequal channels.
    y, x = np.mgrid[0:64, 0:64].astype(np.float32)
    d = np.sqrt((x - 36.0) ** 2 + (y - 28.0) ** 2)
    v = np.clip((20.0 - d) / 10.0 + 0.5, 0.0, 1.0)
    rgb = np.stack([v, 0.8 * v + 0.1, 1.0 - 0.6 * v], axis=-1)
    masks["mask_soft.png"] = Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB")
    # Wide: a rectangle touching the right edge.
    w = np.zeros((48, 80), np.uint8)
    w[8:40, 44:80] = 255
    masks["mask_wide.png"] = Image.fromarray(w, "L")
    for name, img in masks.items():
        img.save(os.path.join(OUT, name))
        masks[name] = Image.open(os.path.join(OUT, name))
        masks[name].load()
    return masks


def main():
    os.makedirs(os.path.join(OUT, "ref"), exist_ok=True)
    text_encoder, vae, unet4, tokenizer = base_components()
    unet9 = build_unet9(unet4)
    save_unet9(unet9)
    masks = make_masks()
    inputs = {n: Image.open(os.path.join(PIPE, n)).convert("RGB") for n in ("input.png", "input_wide.png")}

    goldens, cases = {}, []
    for name in ("mask_rect.png", "mask_soft.png"):
        gray = masks[name].convert("L")
        if name == "mask_soft.png":
            goldens["luma/mask_soft"] = torch.from_numpy(np.asarray(gray, dtype=np.float32).copy())
        for r in BLUR_RADII:
            blurred = gray.filter(ImageFilter.GaussianBlur(r))
            key = f"blur/{name[:-4]}_{r}"
            goldens[key] = torch.from_numpy(np.asarray(blurred, dtype=np.float32).copy())

    for name, which, sampler, strength, mask_name, extra in CASES:
        seed = extra.get("seed", SEED)
        cfg = extra.get("cfg", CFG)
        negative = extra.get("negative", NEGATIVE)
        blur = extra.get("blur", 0)
        image_name = "input_wide.png" if mask_name == "mask_wide.png" else "input.png"
        image = inputs[image_name]
        width, height = image.size
        mask = masks[mask_name]
        pipe = StableDiffusionInpaintPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
            unet=unet9 if which == "9" else unet4, scheduler=scheduler_for(sampler),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        if blur:
            mask = pipe.mask_processor.blur(mask, blur_factor=blur)
        with torch.no_grad():
            out = pipe(
                prompt=PROMPT,
                negative_prompt=negative or None,
                image=image,
                mask_image=mask,
                height=height,
                width=width,
                strength=strength,
                num_inference_steps=STEPS,
                guidance_scale=cfg,
                generator=torch.Generator().manual_seed(seed),
                output_type="np",
            ).images
        out = np.asarray(out, dtype=np.float32)  # [1, H, W, 3] in [0, 1]
        assert out.shape == (1, height, width, 3), out.shape
        saturated = float(np.mean((out <= 0.0) | (out >= 1.0)))
        print(f"{name}: mean {out.mean():.3f} std {out.std():.3f} saturated {saturated:.1%}")
        assert saturated < 0.2, "mostly saturated image: the comparison would be weak"
        goldens[name] = torch.from_numpy(out.copy())
        pipe.numpy_to_pil(out)[0].save(os.path.join(OUT, "ref", f"{name}.png"))
        cases.append(dict(
            name=name, unet_in_channels=int(which), sampler=sampler, strength=strength,
            image=image_name, mask=mask_name, mask_blur=blur, width=width, height=height,
            steps=STEPS, cfg_scale=cfg, seed=seed, batch=1, clip_skip=1, prompt=PROMPT, negative_prompt=negative,
            saturated_fraction=saturated,
        ))

    # Outside the mask the 4-channel images keep the input (blended back at every step); the
    # cases must differ clearly from each other, or the comparison would say little.
    names = [c["name"] for c in cases]
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            x, y = goldens[names[a]], goldens[names[b]]
            if x.shape == y.shape:
                print(f"  {names[a]} vs {names[b]}: max diff {(x - y).abs().max():.3f}")
    save_file(goldens, os.path.join(OUT, "goldens.safetensors"), metadata=versions())
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(dict(versions=versions(), blur_radii=BLUR_RADII, cases=cases), f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
