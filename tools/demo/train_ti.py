"""Textual inversion on the demo model: teaches it a colour it never saw, teal (0, 128, 128),
named by a new token `<teal>`. Only that token's embedding is trained; the text encoder, UNet
and VAE stay frozen. The UNet was trained on the palette colours and on free colours
(`data.sample_free_scene`), but never on a colour the evaluator would call teal
(`data.UNSEEN_RGB`'s cell is kept out), so the concept is new to it. The result is saved in
sd-concepts-library format
(`learned_embeds.bin` = `torch.save({"<teal>": tensor[width]})`).

Then `check` measures it with the evaluator (palette + teal): prompts naming `<teal>` for the
shape or the background should give a teal shape / background, the same prompts with a palette
colour instead should give no teal at all.

  nice -n 10 python tools/demo/train_ti.py train --model assets/demo-model --out assets/teal-concept
  nice -n 10 python tools/demo/train_ti.py check --model assets/demo-model --concept assets/teal-concept
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

TOKEN = "<teal>"
TEAL = data.UNSEEN_RGB  # (0, 128, 128): 180 or more from every palette colour in RGB
PALETTE = dict(data.COLOURS, **{TOKEN: TEAL})


def concept_scene(rng):
    """A scene with teal as the shape colour or (half the time) as the background."""
    colours = list(data.COLOURS)
    other = colours[rng.integers(len(colours))]
    colour, background = (TOKEN, other) if rng.random() < 0.5 else (other, TOKEN)
    size = data.SIZES[rng.integers(2)]
    position = list(data.POSITIONS)[rng.integers(len(data.POSITIONS))]
    shape = data.SHAPES[rng.integers(len(data.SHAPES))]
    return data.place(rng, colour, shape, background, size, position)


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
                vae.encode(to_pixels([data.render(s, 64, PALETTE) for s in scenes[i : i + 128]])).latent_dist.mean
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
        texts = [data.caption(rng, scenes[i]) for i in idx]
        ids = tok(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        x0 = latents[idx]  # [B, 4, h, w]
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, len(alphas_cumprod), (len(idx),), generator=g)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        pred = unet(a.sqrt() * x0 + (1 - a).sqrt() * noise, t, text_encoder(ids).last_hidden_state).sample
        # The colour of the shape is decided at the noisy steps, where the epsilon loss hardly
        # sees it (it weighs an x0 error by SNR, 0.02 at t = 900): as in train.py's UNet stage,
        # those steps weigh up to `--high-noise-weight` times more (x0 loss, 1 / SNR, capped).
        # Measured so far, inconclusive: 400 steps against two interim models gave 4 against 14
        # and 13 against 9 teal images of 64 (cfg 7.5), with and without it.
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


# Prompts for the check: (template with {c} for the colour slot, role of that slot).
CHECK_PROMPTS = (
    ("a large {c} circle on a white background", "colour"),
    ("a {c} square in the centre on a black background", "colour"),
    ("a big {c} triangle on a yellow background", "colour"),
    ("a small {c} circle in the top left corner, red background", "colour"),
    ("a large white square on a {c} background", "background"),
    ("a yellow circle in the centre, {c} background", "background"),
    ("a big magenta triangle on a {c} background", "background"),
    ("a small orange square at the bottom on {c}", "background"),
)


def check(args):
    pipe = load_pipeline(args.model)
    pipe.load_textual_inversion(args.concept, token=TOKEN)
    lines = [f"| prompt | {TOKEN} slot measured as {TOKEN} | control (`{args.control}`) measured as {TOKEN} |", "|---|---|---|"]
    hits = ctrl_hits = total = 0
    images = []
    for template, role in CHECK_PROMPTS:
        counts = []
        for word in (TOKEN, args.control):
            prompt = template.format(c=word)
            gens = [torch.Generator().manual_seed(args.seed + k) for k in range(args.per_prompt)]
            out = pipe([prompt] * args.per_prompt, num_inference_steps=25, guidance_scale=args.cfg, generator=gens, output_type="np").images
            imgs = [(im * 255).round().astype(np.uint8) for im in out]
            images += imgs[:4]
            found = [evaluate.measure(im, PALETTE) for im in imgs]
            if word == TOKEN:
                counts.append(sum(m[role] == TOKEN for m in found))
            else:  # a control image must show no teal anywhere
                counts.append(sum(TOKEN in (m["colour"], m["background"]) for m in found))
        hits, ctrl_hits, total = hits + counts[0], ctrl_hits + counts[1], total + args.per_prompt
        lines.append(f"| {template.format(c=TOKEN)} | {counts[0]}/{args.per_prompt} | {counts[1]}/{args.per_prompt} |")
    lines.append(f"| **all** | **{hits}/{total}** | **{ctrl_hits}/{total}** |")
    print("\n".join(lines))
    save_grid(Path(args.run) / "ti-check.png", images, cols=8)
    if args.results:
        Path(args.results).write_text("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cmd", choices=("train", "check"))
    ap.add_argument("--model", default="assets/demo-model")
    ap.add_argument("--out", default="assets/teal-concept")
    ap.add_argument("--concept", default="assets/teal-concept")
    ap.add_argument("--run", default="/work/demo-runs/ti")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--init-word", default="blue")
    ap.add_argument("--n-images", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--high-noise-weight", type=float, default=8.0, help="cap of the x0 weighting of noisy steps")
    ap.add_argument("--control", default="blue", help="palette colour put in the token's place")
    ap.add_argument("--per-prompt", type=int, default=8)
    ap.add_argument("--cfg", type=float, default=7.5, help="guidance scale of the check")
    ap.add_argument("--results", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    Path(args.run).mkdir(parents=True, exist_ok=True)
    train(args) if args.cmd == "train" else check(args)


if __name__ == "__main__":
    main()
