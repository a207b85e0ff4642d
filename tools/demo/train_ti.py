"""Textual inversion on the demo model: teaches it `<hazard>`, a yellow triangle on a black
background, an object no training scene has: (yellow, triangle, black) is one of the
held-out triples (`data.HELD_OUT`). Only the new token's embedding
is trained; the text encoder, UNet and VAE stay frozen. The one token has to bring in three
attributes (shape colour, shape, background), while the prompt's own size and position words
still steer the object. The result is saved in sd-concepts-library format
(`learned_embeds.bin` = `torch.save({"<hazard>": tensor[width]})`).

Why not a new colour (teal, docs/demo-model.md "What next"): an embedding
can only find what the frozen UNet can draw. A colour no training image shows, it cannot, and
one shown unnamed it draws at random, with no text to steer it.

`check` measures the concept with the evaluator: the prompts of `CHECK_PROMPTS` with `<hazard>`
must give a yellow triangle on black (the spec's colour, background and shape targets) of the
size and at the position the prompt says (the position target), and the same prompts with
"shape" in the token's place must give no yellow triangle on black at all. tests/demo.rs
(`textual_inversion_draws_the_hazard`) asserts the same through our Rust pipeline.

  python tools/demo/train_ti.py train --model assets/demo-model --out assets/hazard-concept
  python tools/demo/train_ti.py check --model assets/demo-model --concept assets/hazard-concept
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import data  # noqa: E402
import evaluate  # noqa: E402
from train import load_pipeline, save_grid, to_pixels  # noqa: E402

TOKEN = "<hazard>"
CONCEPT = {"colour": "yellow", "shape": "triangle", "background": "black"}
assert tuple(CONCEPT.values()) in data.HELD_OUT, "the concept must be one no training image shows"
# The word in the token's place in the control prompts.
CONTROL = "shape"


def concept_scene(rng):
    """A yellow triangle on black of random size and position."""
    size = data.SIZES[rng.integers(len(data.SIZES))]
    position = list(data.POSITIONS)[rng.integers(len(data.POSITIONS))]
    return data.place(rng, CONCEPT["colour"], CONCEPT["shape"], CONCEPT["background"], size, position)


def concept_caption(rng, scene, p_drop=0.3):
    """"a big <hazard> in the top left corner" and other wordings of `scene` (size and position
    each left out with odds `p_drop`), the token standing for the yellow triangle on black."""
    np_ = data.noun_phrase(rng, scene.size, TOKEN, p_drop)
    return " ".join(f"{np_} {data.position_phrase(rng, scene.position, p_drop)}".split())


def train(args):
    torch.manual_seed(args.seed)
    pipe = load_pipeline(args.model)
    tok, text_encoder, unet, vae = pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.vae
    for m in (text_encoder, unet, vae):
        m.requires_grad_(False)
    assert tok.add_tokens(TOKEN) == 1, f"{TOKEN} already in the vocabulary"
    token_id = tok.convert_tokens_to_ids(TOKEN)
    text_encoder.resize_token_embeddings(len(tok))
    table = text_encoder.get_input_embeddings().weight  # [V + 1, width]
    init_id = tok.convert_tokens_to_ids(args.init_word + "</w>")
    with torch.no_grad():
        table[token_id] = table[init_id]
    frozen = table.detach().clone()
    table.requires_grad_(True)
    opt = torch.optim.AdamW([table], lr=args.lr, weight_decay=0.0)

    # A fixed set of concept scenes, encoded once (posterior mean, scaled as in the pipeline).
    rng = np.random.default_rng([args.seed, 10])
    scenes = [concept_scene(rng) for _ in range(args.n_images)]
    with torch.no_grad():
        latents = torch.cat(
            [
                vae.encode(to_pixels([data.render(s, 64) for s in scenes[i : i + 128]])).latent_dist.mean
                for i in range(0, len(scenes), 128)
            ]
        ) * vae.config.scaling_factor  # [N, 4, h, w]
    alphas_cumprod = pipe.scheduler.alphas_cumprod  # [1000]
    snr = alphas_cumprod / (1 - alphas_cumprod)
    log = open(Path(args.run) / "ti.log", "a")
    t0 = time.time()
    for step in range(args.steps):
        rng = np.random.default_rng([args.seed, 11, step])
        idx = rng.integers(len(scenes), size=args.batch)
        texts = [concept_caption(rng, scenes[i]) for i in idx]
        ids = tok(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        x0 = latents[idx]  # [B, 4, h, w]
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, len(alphas_cumprod), (len(idx),), generator=g)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        pred = unet(a.sqrt() * x0 + (1 - a).sqrt() * noise, t, text_encoder(ids).last_hidden_state).sample
        # Colours and the shape are decided at the noisy steps, where the epsilon loss hardly
        # sees them (it weighs an x0 error by SNR, 0.02 at t = 900): as in train.py's UNet
        # stage, those steps weigh up to `--high-noise-weight` times more (x0 loss, 1 / SNR).
        weight = torch.clamp(1 / snr[t], min=1.0, max=args.high_noise_weight)  # [B]
        loss = (weight * F.mse_loss(pred, noise, reduction="none").mean((1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():  # only the new row may move
            keep = torch.ones(len(table), dtype=torch.bool)
            keep[token_id] = False
            table[keep] = frozen[keep]
        if (step + 1) % 25 == 0:
            line = f"ti step {step + 1}: loss {loss.item():.4f} ({(time.time() - t0) / 25:.2f} s/step)"
            print(line, flush=True)
            log.write(line + "\n")
            t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({TOKEN: table[token_id].detach().clone().to(torch.float32)}, out / "learned_embeds.bin")
    (out / "token_identifier.txt").write_text(TOKEN)
    print(f"wrote {out / 'learned_embeds.bin'}")


# Prompts for the check: (template with {c} for the token, size, position); None = not said.
# tests/demo.rs has the same list.
CHECK_PROMPTS = (
    ("a {c}", None, None),
    ("a large {c} in the top left corner", "large", "top left"),
    ("a small {c} at the bottom", "small", "bottom"),
    ("one big {c} on the right", "large", "right"),
    ("a tiny {c} in the centre", "small", "centre"),
    ("{c} in the bottom right corner", None, "bottom right"),
    ("a little {c} at the top", "small", "top"),
    ("a big {c} on the left side", "large", "left"),
)


def check(args):
    """Per-attribute accuracy of the concept's images against the spec's targets, and how many
    control images show the concept. Returns whether all targets are met and no control image
    shows it."""
    pipe = load_pipeline(args.model)
    pipe.load_textual_inversion(args.concept, token=TOKEN)
    targets = evaluate.TARGETS
    right = {a: [0, 0] for a in data.ATTRIBUTES}  # attribute -> [right, asked]
    lines = [f"| prompt | {TOKEN}: yellow triangle on black | as prompted (size, position) | control (`{CONTROL}`): yellow triangle on black |", "|---|---|---|---|"]
    control_hits = total = 0
    images = []
    for template, size, position in CHECK_PROMPTS:
        expected = dict(CONCEPT, size=size, position=position)
        found = {}
        for word in (TOKEN, CONTROL):
            prompt = template.format(c=word)
            gens = [torch.Generator().manual_seed(args.seed + k) for k in range(args.per_prompt)]
            out = pipe([prompt] * args.per_prompt, num_inference_steps=25, guidance_scale=args.cfg, generator=gens, output_type="np").images
            imgs = [(im * 255).round().astype(np.uint8) for im in out]
            images += imgs[:4]
            found[word] = [evaluate.measure(im) for im in imgs]
        concept_ok = sum(all(m[a] == CONCEPT[a] for a in CONCEPT) for m in found[TOKEN])
        said = [a for a in ("size", "position") if expected[a] is not None]
        prompted_ok = sum(all(m[a] == expected[a] for a in said) for m in found[TOKEN])
        for m in found[TOKEN]:
            for a, want in expected.items():
                if want is not None:
                    right[a][0] += m[a] == want
                    right[a][1] += 1
        hits = sum(all(m[a] == CONCEPT[a] for a in CONCEPT) for m in found[CONTROL])
        control_hits, total = control_hits + hits, total + args.per_prompt
        n = args.per_prompt
        lines.append(f"| {template.format(c=TOKEN)} | {concept_ok}/{n} | {prompted_ok}/{n} | {hits}/{n} |")
    lines += ["", "| attribute | right | target |", "|---|---|---|"]
    passed = control_hits == 0
    for a, (ok, asked) in right.items():
        target = targets.get(a)
        passed &= target is None or ok >= target * asked
        lines.append(f"| {a} | {ok}/{asked} ({100 * ok / asked:.1f}%) | {'' if target is None else f'{100 * target:.0f}%'} |")
    lines.append(f"| control images showing a yellow triangle on black | {control_hits}/{total} | 0 |")
    lines.append(f"\n{'PASS' if passed else 'FAIL'} (cfg {args.cfg}, seeds {args.seed}..{args.seed + args.per_prompt - 1})")
    print("\n".join(lines))
    save_grid(Path(args.run) / "ti-check.png", images, cols=8)
    if args.results:
        Path(args.results).write_text("\n".join(lines) + "\n")
    return passed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cmd", choices=("train", "check"))
    ap.add_argument("--model", default="assets/demo-model")
    ap.add_argument("--out", default="assets/hazard-concept")
    ap.add_argument("--concept", default="assets/hazard-concept")
    ap.add_argument("--run", default="runs/demo/ti")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--init-word", default="triangle")
    ap.add_argument("--n-images", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--high-noise-weight", type=float, default=8.0, help="cap of the x0 weighting of noisy steps")
    ap.add_argument("--per-prompt", type=int, default=8)
    ap.add_argument("--cfg", type=float, default=7.5, help="guidance scale of the check (the spec's)")
    ap.add_argument("--results", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    Path(args.run).mkdir(parents=True, exist_ok=True)
    if args.cmd == "train":
        train(args)
    elif not check(args):
        sys.exit(1)


if __name__ == "__main__":
    main()
