"""img2img on the demo model through diffusers' StableDiffusionImg2ImgPipeline.

From a rendered red square, the prompt asks for a blue square in the same place: at strength
0.8 the measured shape should turn blue and keep its position; at strength 0.2 it should stay
red. Several seeds per case; prints a markdown table.

  nice -n 10 python tools/demo/img2img_check.py --model assets/demo-model
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import data  # noqa: E402
import evaluate  # noqa: E402
from train import load_pipeline, save_grid  # noqa: E402

# (position of the red square, background): a few placements, so "same place" means something.
CASES = (("centre", "white"), ("top left", "black"), ("bottom right", "yellow"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="assets/demo-model")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--cfg", type=float, default=2.0, help="guidance scale (eval_spec.json's)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--run", default="runs/demo/img2img")
    ap.add_argument("--results", default="")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model, img2img=True)
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    lines = [
        "| init (red square) | prompt | strength | shape colour measured | same position |",
        "|---|---|---|---|---|",
    ]
    grid = []
    for position, background in CASES:
        rng = np.random.default_rng(0)
        scene = data.place(rng, "red", "square", background, "large", position)
        init = data.render(scene)
        Image.fromarray(init).save(run / f"init-{position.replace(' ', '-')}.png")
        prompt = f"a large blue square {data.POSITION_WORDS[position][0]} on a {background} background"
        for strength in (0.8, 0.2):
            gens = [torch.Generator().manual_seed(k) for k in range(args.seeds)]
            out = pipe(
                [prompt] * args.seeds,
                image=Image.fromarray(init),
                strength=strength,
                num_inference_steps=args.steps,
                guidance_scale=args.cfg,
                generator=gens,
                output_type="np",
            ).images
            imgs = [(im * 255).round().astype(np.uint8) for im in out]
            grid += [init] + imgs
            found = [evaluate.measure(im) for im in imgs]
            colours = ", ".join(m["colour"] or "none" for m in found)
            same = sum(m["position"] == position for m in found)
            lines.append(
                f"| {position}, {background} background | {prompt} | {strength} | {colours} | {same}/{args.seeds} |"
            )
    print("\n".join(lines))
    save_grid(run / "img2img.png", grid, cols=args.seeds + 1)
    if args.results:
        Path(args.results).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
