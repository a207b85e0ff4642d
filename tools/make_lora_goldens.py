#!/usr/bin/env python3
"""Writes the LoRA conformance fixtures under tests/fixtures/lora/.

Base model: the tiny SD 1.x pipeline model of tests/fixtures/pipeline/model
(tools/make_pipeline_goldens.py), f16-stored, run in float32.

1. Two random LoRAs for it, as users have them (f16 tensors), in `loras/`:
   - `lora_a.safetensors`, kohya/A1111 names (`lora_unet_...`, `lora_te_...`):
     text-encoder attention and MLP linears, UNet attention linears, the
     1x1 `proj_in`/`proj_out` convs, and LoCon convs (resnet 3x3 `conv1`/`conv2`
     with a 3x3 down and a 1x1 up, a 1x1 `conv_shortcut`, a downsampler);
     two ranks (4 for linears, 2 for convs) and an `alpha` of 3 on every
     layer (so two scales, 3/4 and 3/2; see A_ALPHAS on per-layer alphas).
   - `lora_b.pt`, kohya names, rank 8, no alpha at all (scale 1), saved with
     torch.save (the safe pickle reader's path), overlapping some of A's layers.
   - `lora_a_peft.safetensors`: LoRA A as diffusers saves it after loading
     it (`get_peft_model_state_dict` + `save_lora_weights` with the PEFT
     configs in the metadata: `lora_A`/`lora_B` names, alpha in
     `lora_adapter_metadata`).
   Each LoRA's layer values are drawn so that its delta is about 30% of the
   weight it changes (a visible change that leaves a sane image).
2. For each case of CASES, diffusers' `load_lora_weights` + `fuse_lora` on a
   fresh copy of the model (several LoRAs: `set_adapters` weights, then
   `fuse_lora`; separate text-encoder / UNet weights: `fuse_lora` per
   component), then StableDiffusionPipeline with the sampler, prompt, seed and
   steps of tests/fixtures/pipeline's `txt2img_ddim` case: `goldens.safetensors`
   holds the decoded images `[1, H, W, 3]` in [0, 1], `fused.safetensors` the
   weights diffusers ends up with for every layer the LoRAs change
   (`<case>/unet/<name>`, `<case>/text_encoder/<name>`, f32), and `cases.json`
   the cases (our prompt with A1111 tags, the LoRA files and weights) and the
   library versions.
   The script checks, before writing, that diffusers' fused weights are
   W + sum(weight * alpha / rank * up @ down) computed here from the kohya
   tensors (kohya's meaning of alpha, absent alpha = scale 1): a golden
   is only worth having if it means what the LoRA file means.

Run from the repository root:
    /work/refenv/bin/python tools/make_lora_goldens.py
Deterministic (seeded, one torch thread); about a minute on one core.
"""

import hashlib
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import diffusers
import peft
import transformers
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from peft.utils import get_peft_model_state_dict
from transformers import CLIPTextModel, CLIPTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sd15  # noqa: E402

torch.set_num_threads(1)
REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODEL = os.path.join(REPO, "tests", "fixtures", "pipeline", "model")
OUT = os.path.join(REPO, "tests", "fixtures", "lora")
# The LoRA files, alone in their folder: it is the tests' `--lora-dir`.
LORAS = os.path.join(OUT, "loras")

# The pipeline fixture's txt2img_ddim case, so that "no LoRA" is that golden.
PROMPT = "a red fox sitting in the snow, highly detailed"
NEGATIVE = "blurry, low quality"
STEPS = 10
CFG = 7.5
SEED = 1234
SIZE = 64

# LoRA A: (module, kind) with kind "linear" (rank 4) or "conv" (rank 2); alphas cycle.
A_TE = [f"text_model.encoder.layers.0.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "out_proj")] + [
    "text_model.encoder.layers.1.mlp.fc1",
    "text_model.encoder.layers.1.mlp.fc2",
]
A_UNET = [
    f"down_blocks.0.attentions.0.transformer_blocks.0.{p}"
    for p in ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_k", "attn2.to_v",
              "ff.net.0.proj", "ff.net.2")
] + [
    "down_blocks.0.attentions.0.proj_in",
    "down_blocks.0.attentions.0.proj_out",
    "mid_block.attentions.0.transformer_blocks.0.attn2.to_q",
    "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0",
    "up_blocks.2.attentions.1.transformer_blocks.0.attn1.to_v",
    "down_blocks.0.resnets.0.conv1",
    "down_blocks.0.resnets.0.conv2",
    "down_blocks.0.resnets.1.time_emb_proj",
    "down_blocks.1.resnets.0.conv_shortcut",
    "down_blocks.0.downsamplers.0.conv",
    "up_blocks.3.resnets.0.conv1",
]
# One alpha for the whole file: with two ranks that is two scales (3/4 for linears, 3/2 for
# convs). Alphas that differ from layer to layer are not a reference case: diffusers 0.42 turns
# kohya's per-layer alphas into PEFT `alpha_pattern` keys that miss its attention and text-encoder
# MLP layers, which then get the file's most common alpha (checked: per-layer alphas 1, 2, 8, 3,
# 0.5 fused to_q at alpha 0.5 instead of 2), so its fused weights would not mean what the file
# means; sd-wgpu applies each layer's own alpha, as kohya and A1111 do (unit-tested in Rust).
A_ALPHAS = [3.0]
# LoRA B: rank 8, no alpha; overlaps A on two layers.
# (diffusers 0.42 cannot tell the format of a kohya text-encoder part without an `out_proj`
# layer, as real files always have one: "Could not automatically infer state dict type".)
B_TE = [
    "text_model.encoder.layers.1.self_attn.q_proj",
    "text_model.encoder.layers.1.self_attn.out_proj",
    "text_model.encoder.layers.0.self_attn.v_proj",
]
B_UNET = [
    "up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
    "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.2",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
    "mid_block.resnets.0.conv2",
]

# name, [(lora file, te weight, unet weight, loaded from)]
CASES = [
    ("kohya", [("lora_a.safetensors", 0.8, 0.8)]),
    ("peft", [("lora_a_peft.safetensors", 0.8, 0.8)]),
    ("two_loras", [("lora_a.safetensors", 0.7, 0.7), ("lora_b.pt", -0.5, -0.5)]),
    ("split_weights", [("lora_a.safetensors", 1.2, 0.5)]),
]


def versions():
    return {
        "generator": "tools/make_lora_goldens.py",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }


def load_pipe():
    """The pipeline fixture model in f32, as tools/make_pipeline_goldens.py runs it."""
    kw = dict(torch_dtype=torch.float32)
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(MODEL, subfolder="vae", **kw).eval(),
        text_encoder=CLIPTextModel.from_pretrained(MODEL, subfolder="text_encoder", **kw).eval(),
        tokenizer=CLIPTokenizer(
            os.path.join(REPO, "assets", "clip", "vocab.json"),
            os.path.join(REPO, "assets", "clip", "merges.txt"),
            model_max_length=77,
            pad_token="<|endoftext|>",
        ),
        unet=UNet2DConditionModel.from_pretrained(MODEL, subfolder="unet", **kw).eval(),
        scheduler=DDIMScheduler.from_config(sd15.SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def weights_of(pipe):
    """Our names (text encoder `text_model.`-prefixed, as transformers 4 and sd-wgpu name it)."""
    te = {k if k.startswith("text_model.") else f"text_model.{k}": v
          for k, v in pipe.text_encoder.state_dict().items()}
    return {"unet": pipe.unet.state_dict(), "text_encoder": te}


def kohya_name(part, module):
    return ("lora_unet_" if part == "unet" else "lora_te_") + module.replace(".", "_")


def make_kohya(base, modules, g, alphas, linear_rank, conv_rank):
    """kohya tensors (f16) for `modules` = [(part, module)]; each delta ~30% of its weight."""
    sd = {}
    for i, (part, module) in enumerate(modules):
        w = base[part][module + ".weight"]
        out_ch, in_ch = w.shape[0], w.shape[1]
        conv = w.dim() == 4
        r = conv_rank if conv else linear_rank
        kernel = tuple(w.shape[2:]) if conv else ()
        down = torch.randn((r, in_ch) + kernel, generator=g)
        up = torch.randn((out_ch, r) + ((1, 1) if conv else ()), generator=g)
        alpha = alphas[i % len(alphas)] if alphas else None
        scale = (alpha / r) if alpha is not None else 1.0
        delta = up.reshape(out_ch, r) @ down.reshape(r, -1)
        k = (0.3 * w.norm() / (scale * delta.norm())).sqrt().item()
        name = kohya_name(part, module)
        sd[f"{name}.lora_down.weight"] = (down * k).half()
        sd[f"{name}.lora_up.weight"] = (up * k).half()
        if alpha is not None:
            sd[f"{name}.alpha"] = torch.tensor(alpha, dtype=torch.float16)
    return sd


def expected_delta(sd, part, module, base_shape):
    """kohya's meaning: scale = alpha / rank, 1 without alpha; f32 from the f16 tensors."""
    name = kohya_name(part, module)
    if f"{name}.lora_down.weight" not in sd:
        return None
    down = sd[f"{name}.lora_down.weight"].float()
    up = sd[f"{name}.lora_up.weight"].float()
    r = down.shape[0]
    alpha = sd.get(f"{name}.alpha")
    scale = alpha.float().item() / r if alpha is not None else 1.0
    return (up.reshape(up.shape[0], r) @ down.reshape(r, -1)).reshape(base_shape) * scale


def apply_case(pipe, loras):
    """diffusers' way: load each file as an adapter, weights, fuse, unload the adapters."""
    names = []
    for i, (file, te_w, unet_w) in enumerate(loras):
        name = f"l{i}"
        pipe.load_lora_weights(LORAS, weight_name=file, adapter_name=name)
        names.append(name)
    if len(loras) == 1 and loras[0][1] != loras[0][2]:
        _, te_w, unet_w = loras[0]
        pipe.fuse_lora(components=["text_encoder"], lora_scale=te_w, adapter_names=names)
        pipe.fuse_lora(components=["unet"], lora_scale=unet_w, adapter_names=names)
    else:
        assert all(te == unet for _, te, unet in loras)
        pipe.set_adapters(names, adapter_weights=[w for _, w, _ in loras])
        pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
    pipe.unload_lora_weights()


def sorted_sets(config):
    """PEFT's config with its sets (target_modules) as sorted lists: the file's metadata, and so
    its hash, would otherwise change with Python's hash seed."""
    return {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}


def a1111_hash(path):
    """A1111's Lora extension (network.py, hashes.py): with no `sshs_model_hash` metadata,
    `addnet_hash_safetensors` for .safetensors (SHA-256 of the bytes after the 8-byte length and
    the header), the plain file SHA-256 otherwise; the infotext shows its first 12 hex digits."""
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".safetensors"):
        n = int.from_bytes(data[:8], "little")
        data = data[8 + n:]
    return hashlib.sha256(data).hexdigest()[:12]


def main():
    os.makedirs(LORAS, exist_ok=True)
    pipe = load_pipe()
    base = {p: {k: v.clone() for k, v in sd.items()} for p, sd in weights_of(pipe).items()}

    g = torch.Generator().manual_seed(2024)
    lora_a = make_kohya(base, [("text_encoder", m) for m in A_TE] + [("unet", m) for m in A_UNET], g,
                        A_ALPHAS, 4, 2)
    lora_b = make_kohya(base, [("text_encoder", m) for m in B_TE] + [("unet", m) for m in B_UNET], g,
                        None, 8, 8)
    save_file(lora_a, os.path.join(LORAS, "lora_a.safetensors"), metadata={"ss_network_module": "networks.lora"})
    torch.save(lora_b, os.path.join(LORAS, "lora_b.pt"))
    sources = {"lora_a.safetensors": lora_a, "lora_b.pt": lora_b,
               "lora_a_peft.safetensors": lora_a}

    # LoRA A as diffusers saves it (PEFT names, configs in the metadata).
    p = load_pipe()
    p.load_lora_weights(LORAS, weight_name="lora_a.safetensors", adapter_name="a")
    StableDiffusionPipeline.save_lora_weights(
        LORAS,
        unet_lora_layers=get_peft_model_state_dict(p.unet, adapter_name="a"),
        text_encoder_lora_layers=get_peft_model_state_dict(p.text_encoder, adapter_name="a"),
        unet_lora_adapter_metadata=sorted_sets(p.unet.peft_config["a"].to_dict()),
        text_encoder_lora_adapter_metadata=sorted_sets(p.text_encoder.peft_config["a"].to_dict()),
        weight_name="lora_a_peft.safetensors",
    )
    peft_keys = sorted(load_file(os.path.join(LORAS, "lora_a_peft.safetensors")))
    print("PEFT file keys, e.g.:", peft_keys[0], peft_keys[-1])
    del p

    goldens, fused, cases = {}, {}, []
    for name, loras in CASES:
        pipe = load_pipe()
        apply_case(pipe, loras)
        after = weights_of(pipe)
        changed = 0
        for part in ("unet", "text_encoder"):
            for key, w0 in base[part].items():
                if not key.endswith(".weight"):
                    continue
                module = key[: -len(".weight")]
                want = w0.clone()
                for file, te_w, unet_w in loras:
                    d = expected_delta(sources[file], part, module, w0.shape)
                    if d is not None:
                        want += (te_w if part == "text_encoder" else unet_w) * d
                got = after[part][key]
                err = (got - want).abs().max().item()
                assert err <= 1e-5 * (1 + want.abs().max().item()), f"{name} {part} {key}: {err}"
                if not torch.equal(got, w0):
                    fused[f"{name}/{part}/{key}"] = got.contiguous()
                    changed += 1
        n_layers = sum(len(A_TE) + len(A_UNET) if f.startswith("lora_a") else len(B_TE) + len(B_UNET)
                       for f, _, _ in loras)
        overlap = 2 if len(loras) == 2 else 0
        assert changed == n_layers - overlap, (name, changed, n_layers)

        generator = torch.Generator().manual_seed(SEED)
        with torch.no_grad():
            out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=CFG,
                       generator=generator, height=SIZE, width=SIZE, output_type="np").images
        out = np.asarray(out, dtype=np.float32)
        saturated = float(np.mean((out <= 0.0) | (out >= 1.0)))
        print(f"{name}: {changed} weights changed, mean {out.mean():.3f} std {out.std():.3f} "
              f"saturated {saturated:.1%}")
        assert saturated < 0.2
        goldens[name] = torch.from_numpy(out.copy())
        tags = " ".join(
            f"<lora:{os.path.splitext(f)[0]}:{te_w}>" if te_w == unet_w
            else f"<lora:{os.path.splitext(f)[0]}:{te_w}:{unet_w}>"
            for f, te_w, unet_w in loras
        )
        cases.append(dict(
            name=name, prompt=PROMPT, tagged_prompt=f"{PROMPT} {tags}", negative_prompt=NEGATIVE,
            sampler="ddim", steps=STEPS, cfg_scale=CFG, seed=SEED, width=SIZE, height=SIZE,
            loras=[dict(file=f, text_encoder_weight=te_w, unet_weight=unet_w) for f, te_w, unet_w in loras],
            fused_weights=changed, saturated_fraction=saturated,
        ))

    # Each LoRA must change the image clearly, or the comparison would say little.
    base_pipe = load_pipe()
    with torch.no_grad():
        plain = base_pipe(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=CFG,
                          generator=torch.Generator().manual_seed(SEED), height=SIZE, width=SIZE,
                          output_type="np").images
    for name, img in goldens.items():
        mse = float(((img.numpy() - plain) ** 2).mean())
        print(f"  {name} vs no LoRA: PSNR {-10 * np.log10(mse):.1f} dB")
        assert mse > 1e-5, name
    save_file(goldens, os.path.join(OUT, "goldens.safetensors"), metadata=versions())
    save_file(fused, os.path.join(OUT, "fused.safetensors"), metadata=versions())
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        hashes = {f: a1111_hash(os.path.join(LORAS, f)) for f in sources}
        json.dump(dict(versions=versions(), a1111_hashes=hashes, cases=cases), f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
