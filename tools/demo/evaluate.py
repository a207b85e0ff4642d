"""Says what a generated demo image shows, with plain pixel statistics (easy to port to Rust).

Measurement of an RGB image of side S (all thresholds are in `SPEC`, also in eval_spec.json):
 1. Background: per-channel lower median of the border ring (width S/32 pixels), named by the
    nearest palette colour (Euclidean RGB; ties go to the first in palette order).
 2. Rough foreground: pixels farther than `fg_distance` from the background median. If none,
    there is no shape. Their lower median is the rough shape colour used in step 3.
 3. Shape pixels: pixels nearer to the shape median than to the background median (the
    mid-point boundary, which keeps the area of a blurred edge); keep the largest 4-connected
    component. If it is smaller than `min_area` * S^2 there is no shape.
 4. From the component's bounding box (w x h pixels, top row y0), area A and pixel rows:
    size     = large if max(w, h) / S >= `large_extent`, else small;
    position = column from the box centre x / S (< `split_low` left, > `split_high` right,
               else centre), row likewise from y (top/centre/bottom), named as in data.POSITIONS;
    shape    = triangle if the share of A above the box's middle line (y0 + h/2; a pixel row y
               counts clamp(y0 + h/2 - y, 0, 1) of its pixels) is < `top_triangle` (ideal 1/4
               for the apex-up triangle, 1/2 for the others); else square if the fill ratio
               A / (w h) >= `fill_square` (ideal 1), else circle (ideal pi/4 = 0.785);
    colour   = lower median of the max(1, A // 4) component pixels farthest from the background
               median (ties in raster order; edge pixels are blends of the two colours), named
               by the nearest palette colour.

Commands:
  evaluate.py ground-truth          evaluator on rendered scenes (must be ~100%)
  evaluate.py reconstruct           evaluator on VAE reconstructions (the model's upper bound)
  evaluate.py generate --model DIR  held-out captions through diffusers, accuracy table
  evaluate.py spec                  writes tools/demo/eval_spec.json
  evaluate.py image FILE...         prints what each image shows
"""

import argparse
import json
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import data  # noqa: E402

HERE = Path(__file__).parent

SPEC = {
    "palette": {name: list(rgb) for name, rgb in data.COLOURS.items()},
    "border_fraction": 1 / 32,
    "fg_distance": 64.0,
    "min_area": 0.015,
    "large_extent": 23 / 64,
    "split_low": 0.375,
    "split_high": 0.625,
    "fill_square": 0.89,
    "top_triangle": 0.375,
    "positions": {name: list(cr) for name, cr in data.POSITIONS.items()},
}

NO_SHAPE = {"colour": None, "shape": None, "size": None, "position": None, "fill": None}


def lower_median(values):
    """Per-column lower median of [N, C] values: the element at index (N - 1) // 2 when sorted."""
    return np.sort(values, axis=0)[(len(values) - 1) // 2]


def nearest_colour(rgb, palette):
    names = list(palette)
    table = np.array([palette[n] for n in names], np.float64)  # [K, 3]
    d = ((table - np.asarray(rgb, np.float64)) ** 2).sum(1)
    return names[int(np.argmin(d))]


def largest_component(mask):
    """Boolean mask of the largest 4-connected component of `mask` (first found wins ties)."""
    h, w = mask.shape
    labels = np.zeros((h, w), np.int32)
    best, best_size, label = 0, 0, 0
    for y0, x0 in zip(*np.nonzero(mask)):
        if labels[y0, x0]:
            continue
        label += 1
        labels[y0, x0] = label
        queue, size = deque([(y0, x0)]), 0
        while queue:
            y, x = queue.popleft()
            size += 1
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = label
                    queue.append((ny, nx))
        if size > best_size:
            best, best_size = label, size
    return labels == best if best else np.zeros_like(mask)


def measure(img, palette=None):
    """What an RGB uint8 [S, S, 3] image shows: dict of the five attributes (None = no shape),
    plus the raw measurements (fill, top, extent, centre) for diagnostics. `palette` (name ->
    RGB) replaces the demo palette, e.g. to add a textual-inversion colour."""
    palette = palette or SPEC["palette"]
    img = np.asarray(img)
    side = img.shape[0]
    px = img.astype(np.float64)  # [S, S, 3]
    ring = max(1, round(side * SPEC["border_fraction"]))
    border = np.ones((side, side), bool)
    border[ring:-ring, ring:-ring] = False
    bg = lower_median(px[border])  # [3]
    out = {"background": nearest_colour(bg, palette), **NO_SHAPE}
    dist_bg = np.sqrt(((px - bg) ** 2).sum(-1))  # [S, S]
    rough = dist_bg > SPEC["fg_distance"]
    if not rough.any():
        return out
    fg = lower_median(px[rough])
    dist_fg = np.sqrt(((px - fg) ** 2).sum(-1))
    shape = largest_component(dist_fg < dist_bg)
    area = int(shape.sum())
    if area < SPEC["min_area"] * side * side:
        return out
    ys, xs = np.nonzero(shape)
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    w, h = x1 - x0 + 1, y1 - y0 + 1
    fill = area / (w * h)
    # Share of the area above the box's middle row line: 1/4 for an apex-up triangle, 1/2 for
    # a circle or a square. Unlike the fill ratio it survives blurred corners.
    top = float(np.clip((y0 + h / 2) - ys, 0, 1).sum()) / area
    cx, cy = (x0 + x1 + 1) / 2 / side, (y0 + y1 + 1) / 2 / side

    def third(v):
        return 0 if v < SPEC["split_low"] else 2 if v > SPEC["split_high"] else 1

    if top < SPEC["top_triangle"]:
        kind = "triangle"
    else:
        kind = "square" if fill >= SPEC["fill_square"] else "circle"
    # Colour from the quarter of the shape's pixels farthest from the background: the others
    # are more likely blends of the two colours along the edge.
    d = dist_bg[shape]
    core = px[shape][np.argsort(-d, kind="stable")[: max(1, area // 4)]]
    cell = (third(cx), third(cy))
    out.update(
        colour=nearest_colour(lower_median(core), palette),
        shape=kind,
        size="large" if max(w, h) / side >= SPEC["large_extent"] else "small",
        position=next(name for name, cr in SPEC["positions"].items() if tuple(cr) == cell),
        fill=round(float(fill), 3),
        top=round(top, 3),
        extent=round(float(max(w, h) / side), 3),
        centre=(round(float(cx), 3), round(float(cy), 3)),
    )
    return out


def score(results):
    """Accuracy per attribute (and all five at once) over (truth, measured) pairs."""
    acc = {a: np.mean([t[a] == m[a] for t, m in results]) for a in data.ATTRIBUTES}
    acc["all"] = np.mean([all(t[a] == m[a] for a in data.ATTRIBUTES) for t, m in results])
    return acc


TARGETS = {"colour": 0.9, "background": 0.9, "position": 0.8, "shape": 0.7}


def degrade(img, rng, blur, noise):
    """Gaussian blur (sigma `blur` px, edge-clamped) and Gaussian noise (std `noise` in 0..255):
    a stand-in for the soft edges and speckle of decoded images."""
    x = img.astype(np.float64)
    if blur > 0:
        r = int(np.ceil(3 * blur))
        k = np.exp(-0.5 * (np.arange(-r, r + 1) / blur) ** 2)
        k /= k.sum()
        for axis in (0, 1):
            padded = np.pad(x, [(r, r) if a == axis else (0, 0) for a in range(3)], mode="edge")
            x = sum(w * np.take(padded, range(i, i + img.shape[axis]), axis=axis) for i, w in enumerate(k))
    x += rng.normal(0, noise, x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def ground_truth(args):
    """The evaluator on renders of held-out and training scenes, optionally degraded."""
    rng = np.random.default_rng(args.seed)
    scenes = [s for s, _ in data.held_out_set(args.n, args.seed)]
    scenes += [data.sample_scene(rng) for _ in range(args.n)]
    images = [degrade(data.render(s, args.side), rng, args.blur, args.noise) for s in scenes]
    results = [(s.attributes(), measure(img)) for s, img in zip(scenes, images)]
    acc = score(results)
    print(
        f"ground truth, {len(scenes)} scenes at {args.side}px, blur {args.blur} px, noise {args.noise}: "
        + ", ".join(f"{k} {v:.1%}" for k, v in acc.items())
    )
    fills = {k: [m["fill"] for t, m in results if t["shape"] == k and m["fill"] is not None] for k in data.SHAPES}
    print("  fill ratio range: " + ", ".join(f"{k} {min(v):.3f}..{max(v):.3f}" for k, v in fills.items() if v))
    for t, m in results:
        if any(t[a] != m[a] for a in data.ATTRIBUTES):
            print("  miss:", t, m)


def reconstruct(args):
    """The evaluator on held-out renders passed through the VAE (encode, posterior mean,
    decode): the best the full model can score, whatever the UNet does."""
    import torch
    from diffusers import AutoencoderKL

    from train import to_pixels, to_uint8

    torch.set_num_threads(args.threads)
    vae = AutoencoderKL.from_pretrained(str(Path(args.model) / "vae"), torch_dtype=torch.float32).eval()
    scenes = [s for s, _ in data.held_out_set(args.n, args.seed)]
    results = []
    with torch.no_grad():
        for i in range(0, len(scenes), 64):
            x = to_pixels([data.render(s) for s in scenes[i : i + 64]])  # [B, 3, 64, 64]
            y = vae.decode(vae.encode(x).latent_dist.mean).sample
            results += [(s.attributes(), measure(img)) for s, img in zip(scenes[i : i + 64], to_uint8(y))]
    acc = score(results)
    print(f"VAE reconstructions of {len(scenes)} held-out scenes: " + ", ".join(f"{k} {v:.1%}" for k, v in acc.items()))
    for t, m in results:
        if any(t[a] != m[a] for a in data.ATTRIBUTES):
            print("  miss:", t, m)


def eval_set(n, seed):
    """The held-out evaluation captions: (caption, attributes, generation seed)."""
    return [(c, s.attributes(), seed * 100_000 + i) for i, (s, c) in enumerate(data.held_out_set(n, seed))]


def generate(args):
    import torch

    from train import load_pipeline, save_grid

    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model)
    items = eval_set(args.n, args.seed)
    rows, grids = [], {}
    for cfg in args.cfg:
        results, images, t0 = [], [], time.time()
        for i in range(0, len(items), args.batch):
            chunk = items[i : i + args.batch]
            gens = [torch.Generator().manual_seed(s) for _, _, s in chunk]
            out = pipe(
                [c for c, _, _ in chunk],
                num_inference_steps=args.steps,
                guidance_scale=cfg,
                generator=gens,
                output_type="np",
            ).images
            for (caption, truth, _), img in zip(chunk, out):
                img = (img * 255).round().astype(np.uint8)
                images.append(img)
                results.append((truth, measure(img)))
        acc = score(results)
        rows.append((cfg, acc, time.time() - t0))
        grids[cfg] = images
        print(f"cfg {cfg}: " + ", ".join(f"{k} {v:.1%}" for k, v in acc.items()), flush=True)
        if args.verbose:
            for (caption, _, _), (t, m) in zip(items, results):
                bad = [a for a in data.ATTRIBUTES if t[a] != m[a]]
                if bad:
                    print(f"  {caption!r}: {', '.join(f'{a} {t[a]} -> {m[a]}' for a in bad)}")
    out = Path(args.samples)
    out.mkdir(parents=True, exist_ok=True)
    for cfg, images in grids.items():
        save_grid(out / f"heldout-cfg{cfg}.png", images[:64], cols=8)
    write_results(args, rows, items, type(pipe.scheduler).__name__)


def write_results(args, rows, items, scheduler):
    attrs = list(data.ATTRIBUTES) + ["all"]
    lines = [
        "# Demo model: evaluator accuracy on held-out captions",
        "",
        f"`python tools/demo/evaluate.py generate --model {args.model} --n {args.n} --steps {args.steps}` "
        f"(diffusers StableDiffusionPipeline, {scheduler} {args.steps} steps, f32 on CPU, seed of caption i = "
        f"{args.seed} * 100000 + i). {len(items)} captions from {len(data.HELD_OUT)} (colour, shape, background) "
        "triples never shown in training. Targets: colours >= 90%, position >= 80%, shape >= 70%.",
        "",
        "| cfg | " + " | ".join(attrs) + " | time |",
        "|---|" + "---|" * (len(attrs) + 1),
    ]
    for cfg, acc, seconds in rows:
        lines.append(f"| {cfg} | " + " | ".join(f"{acc[a]:.1%}" for a in attrs) + f" | {seconds:.0f} s |")
    lines.append("")
    Path(args.results).write_text("\n".join(lines))
    print(f"wrote {args.results}")


def write_spec(args):
    items = eval_set(args.n, args.seed)
    spec = dict(
        SPEC,
        about="Thresholds of tools/demo/evaluate.py (see its docstring for the algorithm) and held-out "
        "captions for the CI subset. Fractions are of the image side.",
        image_side=64,
        held_out_triples=[list(t) for t in data.HELD_OUT],
        generation={"steps": args.steps, "guidance_scale": args.cfg, "scheduler": "DDIM (scheduler_config.json)"},
        targets=TARGETS,
        captions=[{"caption": c, "seed": s, **t} for c, t, s in items[: args.ci]],
    )
    # One line per key, and per caption, so the file reads (and diffs) well.
    body = []
    for key, value in spec.items():
        if key == "captions":
            rows = ",\n".join("  " + json.dumps(c) for c in value)
            body.append(f' "{key}": [\n{rows}\n ]')
        else:
            body.append(f" {json.dumps(key)}: {json.dumps(value)}")
    Path(args.spec).write_text("{\n" + ",\n".join(body) + "\n}\n")
    print(f"wrote {args.spec}: {args.ci} captions")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("ground-truth")
    g.add_argument("--n", type=int, default=500)
    g.add_argument("--side", type=int, default=64)
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--blur", type=float, default=0.0)
    g.add_argument("--noise", type=float, default=0.0)
    g = sub.add_parser("generate")
    g.add_argument("--model", default="assets/demo-model")
    g.add_argument("--n", type=int, default=240)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--steps", type=int, default=25)
    g.add_argument("--cfg", type=float, nargs="+", default=[7.5, 1.0])
    g.add_argument("--batch", type=int, default=16)
    g.add_argument("--threads", type=int, default=1)
    g.add_argument("--samples", default="runs/demo/eval")
    g.add_argument("--results", default=str(HERE / "results.md"))
    g.add_argument("--verbose", action="store_true")
    g = sub.add_parser("reconstruct")
    g.add_argument("--model", default="assets/demo-model")
    g.add_argument("--n", type=int, default=240)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--threads", type=int, default=1)
    g = sub.add_parser("spec")
    g.add_argument("--n", type=int, default=240)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--steps", type=int, default=25)
    g.add_argument("--ci", type=int, default=240, help="captions in the spec (the first of the held-out set)")
    # SD's and the CLI's default guidance, where a user runs the model (README, "The demo
    # model"); tests/demo.rs also asserts the targets at cfg 2 on the CPU.
    g.add_argument("--cfg", type=float, default=7.5, help="guidance scale the CI captions run at")
    g.add_argument("--spec", default=str(HERE / "eval_spec.json"))
    g = sub.add_parser("image")
    g.add_argument("files", nargs="+")
    args = ap.parse_args()
    if args.cmd == "ground-truth":
        ground_truth(args)
    elif args.cmd == "reconstruct":
        reconstruct(args)
    elif args.cmd == "generate":
        generate(args)
    elif args.cmd == "spec":
        write_spec(args)
    else:
        from PIL import Image

        for f in args.files:
            print(f, measure(np.asarray(Image.open(f).convert("RGB"))))


if __name__ == "__main__":
    main()
