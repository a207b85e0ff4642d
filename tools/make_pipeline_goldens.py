#!/usr/bin/env python3
"""Writes the end-to-end conformance fixtures under tests/fixtures/pipeline/.

1. A small Stable Diffusion model of SD 1.x architecture in diffusers layout
   (`model/`): a CLIP text encoder with the real 49408-token vocabulary but a
   32-wide, 2-layer transformer, a 4-level UNet with cross-attention at three
   levels (SD 1.x topology, tiny widths), a 4-level VAE (latent factor 8),
   the CLIP tokenizer files copied from assets/clip, and SD 1.5's scheduler
   config (a PNDM config without `timestep_spacing`). Every parameter is
   re-drawn from a non-trivial distribution (tools/make_model_goldens.py's
   `randomise`), then rounded to float16: the weights are stored as f16
   safetensors (the fixture stays small) and the reference runs in float32
   from exactly those rounded values.
2. `input.png`, `input_wide.png`: img2img inputs (RGB, sizes multiples of 8, so
   neither side resizes).
3. For each case of CASES, diffusers' StableDiffusionPipeline /
   StableDiffusionImg2ImgPipeline with a CPU `torch.Generator` per image
   (`manual_seed(seed + i)` for image i: sd-wgpu's batch rule), output_type
   "np": `goldens.safetensors` holds the decoded float images `[B, H, W, 3]`
   in [0, 1] (after diffusers' clamp, before the uint8 conversion) and
   `ref/<case>.png` the 8-bit images diffusers' `numpy_to_pil` makes of them.
   `cases.json` lists every case's parameters, the prompt's token ids and the
   library versions.

Run from the repository root:
    ref/bin/python tools/make_pipeline_goldens.py
Deterministic (seeded, one torch thread); a few minutes on one core.
"""

import json
import os
import shutil
import sys

import numpy as np
import PIL
import torch
from PIL import Image
from safetensors.torch import save_file

import diffusers
import transformers
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_model_goldens import randomise  # noqa: E402
import sd15  # noqa: E402

torch.set_num_threads(1)
REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(REPO, "tests", "fixtures", "pipeline")
MODEL = os.path.join(OUT, "model")

# SD 1.5's scheduler/scheduler_config.json (tools/sd15.py).
SD15_SCHEDULER = sd15.SCHEDULER_CONFIG

# sd-wgpu sampler name -> diffusers scheduler class and overrides (as tools/make_scheduler_goldens.py).
SAMPLERS = {
    "ddim": (DDIMScheduler, {}),
    "pndm": (PNDMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler-a": (EulerAncestralDiscreteScheduler, {}),
    "dpm++2m-karras": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
}

PROMPT = "a red fox sitting in the snow, highly detailed"
NEGATIVE = "blurry, low quality"

# name, mode, sampler, width, height, extra parameters.
CASES = [
    ("txt2img_ddim", "txt2img", "ddim", 64, 64, {}),
    ("txt2img_pndm", "txt2img", "pndm", 64, 64, {}),
    ("txt2img_euler_a", "txt2img", "euler-a", 64, 64, {}),
    ("txt2img_dpmpp_2m_karras", "txt2img", "dpm++2m-karras", 64, 64, {}),
    ("txt2img_ddim_wide", "txt2img", "ddim", 80, 48, {}),
    ("txt2img_euler_a_wide", "txt2img", "euler-a", 80, 48, {}),
    ("txt2img_dpmpp_2m_karras_wide", "txt2img", "dpm++2m-karras", 80, 48, {}),
    # Batch of two: generators seed, seed + 1; the ancestral noise is per image.
    ("txt2img_euler_a_batch", "txt2img", "euler-a", 64, 64, {"batch": 2, "seed": 7}),
    # Guidance 1: diffusers runs the conditional pass only.
    ("txt2img_euler_cfg1", "txt2img", "euler", 64, 64, {"cfg": 1.0, "negative": ""}),
    # "CLIP skip 2" (diffusers clip_skip=1) and no negative prompt (the encoding of "").
    ("txt2img_ddim_clip_skip", "txt2img", "ddim", 64, 64, {"clip_skip": 2, "negative": ""}),
    ("img2img_ddim", "img2img", "ddim", 64, 64, {"strength": 0.6}),
    ("img2img_pndm", "img2img", "pndm", 64, 64, {"strength": 0.6}),
    ("img2img_euler_a", "img2img", "euler-a", 64, 64, {"strength": 0.75}),
    ("img2img_dpmpp_2m_karras", "img2img", "dpm++2m-karras", 64, 64, {"strength": 0.75}),
    ("img2img_euler_a_wide", "img2img", "euler-a", 80, 48, {"strength": 0.5}),
]
STEPS = 10
CFG = 7.5
SEED = 1234


def versions():
    return {
        "generator": "tools/make_pipeline_goldens.py",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "python": sys.version.split()[0],
    }


def rescale_output(conv, target_std, example):
    """Scales a final convolution so that its output on `example` has roughly
    `target_std`: random weights otherwise give outputs far outside the range the
    pipeline clamps to (VAE) or noise predictions far from unit scale (UNet), and
    a mostly saturated image would compare nothing."""
    with torch.no_grad():
        out = conv(example)
        k = target_std / out.std().item()
        conv.weight.mul_(k)
        conv.bias.mul_(k)


def build_models():
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    ).eval()
    randomise(text_encoder, 11)

    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=[16, 32, 32, 32],
        down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        layers_per_block=2,
        attention_head_dim=4,
        norm_num_groups=8,
        cross_attention_dim=32,
    ).eval()
    randomise(unet, 12)

    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=[8, 16, 16, 16],
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=64,
    ).eval()
    randomise(vae, 13)

    # Output scales: noise predictions of about unit variance, decoded images
    # mostly inside [-1, 1]; the example inputs are what the pipeline feeds.
    g = torch.Generator().manual_seed(99)
    captured = {}
    hook = unet.conv_out.register_forward_pre_hook(lambda m, a: captured.update(x=a[0]))
    with torch.no_grad():
        unet(torch.randn(1, 4, 8, 8, generator=g), torch.tensor(981.0),
             encoder_hidden_states=torch.randn(1, 77, 32, generator=g))
    hook.remove()
    rescale_output(unet.conv_out, 1.0, captured["x"])
    hook = vae.decoder.conv_out.register_forward_pre_hook(lambda m, a: captured.update(x=a[0]))
    with torch.no_grad():
        vae.decode(torch.randn(1, 4, 8, 8, generator=g))
    hook.remove()
    rescale_output(vae.decoder.conv_out, 0.45, captured["x"])

    # The stored weights are f16; the reference computes in f32 from the same values.
    for m in (text_encoder, unet, vae):
        m.half().float()
    return text_encoder, unet, vae


def save_model(pipe):
    if os.path.isdir(MODEL):
        shutil.rmtree(MODEL)
    pipe.to(torch.float16)
    pipe.save_pretrained(MODEL, safe_serialization=True)
    pipe.to(torch.float32)
    # The tokenizer files exactly as sd-wgpu ships them (a diffusers folder from the hub has
    # these two and tokenizer_config.json; transformers 5's 3.6 MB tokenizer.json is dropped).
    os.remove(os.path.join(MODEL, "tokenizer", "tokenizer.json"))
    for f in ("vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(REPO, "assets", "clip", f), os.path.join(MODEL, "tokenizer", f))
    with open(os.path.join(MODEL, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(SD15_SCHEDULER, f, indent=2)
        f.write("\n")


def make_inputs():
    """Smooth shapes and gradients with some texture, RGB."""
    images = {}
    for name, (w, h) in {"input.png": (64, 64), "input_wide.png": (80, 48)}.items():
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        r = 0.5 + 0.5 * np.sin(x / w * 6.0)
        gch = y / h
        b = ((x - w / 2) ** 2 + (y - h / 2) ** 2 < (min(w, h) / 3) ** 2).astype(np.float32)
        rng = np.random.default_rng(5)
        img = np.stack([r, gch, 0.3 + 0.6 * b], axis=-1) + 0.05 * rng.standard_normal((h, w, 3))
        img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
        Image.fromarray(img, "RGB").save(os.path.join(OUT, name))
        images[name] = Image.open(os.path.join(OUT, name)).convert("RGB")
    return images


def skip_embeds(pipe, text, clip_skip):
    ids = pipe.tokenizer(text, padding="max_length", max_length=77, truncation=True,
                         return_tensors="pt").input_ids
    with torch.no_grad():
        states = pipe.text_encoder(ids, output_hidden_states=True).hidden_states
        return pipe.text_encoder.final_layer_norm(states[-clip_skip])


def scheduler_for(name):
    cls, overrides = SAMPLERS[name]
    return cls.from_config({**SD15_SCHEDULER, **overrides})


def main():
    os.makedirs(os.path.join(OUT, "ref"), exist_ok=True)
    text_encoder, unet, vae = build_models()
    tokenizer = CLIPTokenizer(
        os.path.join(REPO, "assets", "clip", "vocab.json"),
        os.path.join(REPO, "assets", "clip", "merges.txt"),
        model_max_length=77,
        pad_token="<|endoftext|>",
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler.from_config(SD15_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    save_model(pipe)
    inputs = make_inputs()
    prompt_ids = tokenizer(PROMPT).input_ids
    negative_ids = tokenizer(NEGATIVE).input_ids

    goldens, cases = {}, []
    for name, mode, sampler, width, height, extra in CASES:
        batch = extra.get("batch", 1)
        seed = extra.get("seed", SEED)
        cfg = extra.get("cfg", CFG)
        negative = extra.get("negative", NEGATIVE)
        clip_skip = extra.get("clip_skip", 1)
        components = dict(pipe.components, scheduler=scheduler_for(sampler))
        generators = [torch.Generator().manual_seed(seed + i) for i in range(batch)]
        args = dict(
            prompt=PROMPT,
            negative_prompt=negative or None,
            num_inference_steps=STEPS,
            guidance_scale=cfg,
            num_images_per_prompt=batch,
            generator=generators,
            output_type="np",
        )
        if clip_skip > 1:
            # diffusers' own clip_skip path reads `text_encoder.text_model`, which transformers 5
            # no longer has; the same computation (the hidden state `clip_skip - 1` layers before
            # the last, then the final LayerNorm) is done here and passed as embeddings.
            args["prompt_embeds"] = skip_embeds(pipe, PROMPT, clip_skip)
            args["negative_prompt_embeds"] = skip_embeds(pipe, negative, clip_skip)
            del args["prompt"], args["negative_prompt"]
        case = dict(name=name, mode=mode, sampler=sampler, width=width, height=height, steps=STEPS,
                    cfg_scale=cfg, seed=seed, batch=batch, prompt=PROMPT, negative_prompt=negative,
                    clip_skip=clip_skip)
        with torch.no_grad():
            if mode == "txt2img":
                p = StableDiffusionPipeline(**components, requires_safety_checker=False)
                p.set_progress_bar_config(disable=True)
                out = p(height=height, width=width, **args).images
            else:
                p = StableDiffusionImg2ImgPipeline(**components, requires_safety_checker=False)
                p.set_progress_bar_config(disable=True)
                image = inputs["input.png" if (width, height) == (64, 64) else "input_wide.png"]
                assert image.size == (width, height)
                out = p(image=image, strength=extra["strength"], **args).images
                case["image"] = "input.png" if (width, height) == (64, 64) else "input_wide.png"
                case["strength"] = extra["strength"]
        out = np.asarray(out, dtype=np.float32)  # [B, H, W, 3] in [0, 1]
        assert out.shape == (batch, height, width, 3), out.shape
        saturated = float(np.mean((out <= 0.0) | (out >= 1.0)))
        print(f"{name}: mean {out.mean():.3f} std {out.std():.3f} saturated {saturated:.1%}")
        assert saturated < 0.2, "mostly saturated image: the comparison would be weak"
        goldens[name] = torch.from_numpy(out.copy())
        for i, pil in enumerate(p.numpy_to_pil(out)):
            pil.save(os.path.join(OUT, "ref", f"{name}-{i}.png"))
        case["saturated_fraction"] = saturated
        cases.append(case)

    # The samplers must lead to clearly different images, or the comparison would say little.
    names = list(goldens)
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            x, y = goldens[names[a]][:1], goldens[names[b]][:1]
            if x.shape == y.shape:
                print(f"  {names[a]} vs {names[b]}: max diff {(x - y).abs().max():.3f}")
    save_file(goldens, os.path.join(OUT, "goldens.safetensors"), metadata=versions())
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(dict(versions=versions(), prompt_ids=prompt_ids, negative_ids=negative_ids, cases=cases),
                  f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
