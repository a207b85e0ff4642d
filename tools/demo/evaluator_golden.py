"""Golden answers of the demo evaluator (`measure` in tools/demo/evaluate.py) for its Rust port
(tests/support/demo/evaluate.rs), checked answer for answer by tests/demo_evaluator.rs.

Images, in PNG strips under tests/fixtures/demo/evaluator/ (one strip per group and side, images
stacked top to bottom; PNG keeps the uint8 pixels exactly):
  clean      data.py renders of training and held-out scenes, at 64 px and at 32/48/80/96 px
             (the border ring rounds side/32 half to even: 1.5 -> 2, 2.5 -> 2)
  degraded   the same kind of renders through evaluate.degrade (blur 0.5..2 px, noise 0..16)
  teal       scenes using the textual-inversion colour, measured with train_ti's palette (+ teal)
  edge       flat images, shapes just under / over min_area, two equal shapes (first found wins),
             palette ties, box centres and extents exactly on the thresholds, a shape covering most
             of the border, half-and-half, checkerboards, gradients, uniform noise
  generated  images from an interim demo model through diffusers (the CI captions of
             eval_spec.json, PNDM 25 steps, cfg 7.5 and 1.0), the kind of image the tests measure

cases.json lists each image (strip, index, side, palette) with measure()'s answer and the library
versions. The script first checks that eval_spec.json holds evaluate.SPEC's numbers: the Rust
port reads them from there.

  ref/bin/python tools/demo/evaluator_golden.py --model runs/demo/main/model-001000
"""

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import data  # noqa: E402
import evaluate  # noqa: E402

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
# train_ti.PALETTE, spelled out so this script does not import torch before it needs it
# (tests/demo_evaluator.rs reads the entry from cases.json).
TEAL = ("<teal>", (0, 128, 128))
PALETTES = {"demo": evaluate.SPEC["palette"], "teal": dict(evaluate.SPEC["palette"], **{TEAL[0]: list(TEAL[1])})}


def check_spec():
    spec = json.loads((HERE / "eval_spec.json").read_text())
    for key, value in evaluate.SPEC.items():
        if spec[key] != value:
            sys.exit(f"eval_spec.json {key} = {spec[key]!r} but evaluate.SPEC has {value!r}: run evaluate.py spec")


def flat(rgb, side=64):
    img = np.empty((side, side, 3), np.uint8)
    img[:] = rgb
    return img


def boxes(bg, fg, rects, side=64):
    """`bg` image with each (x0, x1, y0, y1) half-open rectangle filled with `fg`."""
    img = flat(bg, side)
    for x0, x1, y0, y1 in rects:
        img[y0:y1, x0:x1] = fg
    return img


def clean_and_degraded(rng):
    groups = {"clean": [], "degraded": []}
    scenes = [s for s, _ in data.held_out_set(60, 3)] + [data.sample_scene(rng) for _ in range(60)]
    for i, scene in enumerate(scenes):
        groups["clean"].append((data.render(scene, 64), "demo", f"{scene}"))
    for side in (32, 48, 80, 96):
        for _ in range(6):
            scene = data.sample_scene(rng)
            groups["clean"].append((data.render(scene, side), "demo", f"{scene}"))
    for blur in (0.5, 1.0, 1.5, 2.0):
        for noise in (0.0, 4.0, 8.0, 16.0):
            # Noisy images compress badly: fewer of them, to keep the fixture small.
            for _ in range(6 if noise == 0 else 3):
                scene = data.sample_scene(rng)
                img = evaluate.degrade(data.render(scene, 64), rng, blur, noise)
                groups["degraded"].append((img, "demo", f"blur {blur} noise {noise}: {scene}"))
    return groups


def teal_scenes(rng):
    palette = dict(data.COLOURS, **{TEAL[0]: TEAL[1]})
    out = []
    for k in range(12):
        other = list(data.COLOURS)[rng.integers(len(data.COLOURS))]
        colour, background = (TEAL[0], other) if k % 2 else (other, TEAL[0])
        scene = data.place(rng, colour, data.SHAPES[k % 3], background, data.SIZES[k % 2], list(data.POSITIONS)[k % 9])
        img = data.render(scene, 64, palette)
        if k >= 8:
            img = evaluate.degrade(img, rng, 1.0, 0.0)
        out.append((img, "teal", f"{scene}"))
    return out


def edge_cases(rng):
    c = data.COLOURS
    out = [(flat(rgb), "demo", f"flat {name}") for name, rgb in c.items()]
    out += [
        (flat((128, 128, 128)), "demo", "flat grey, off the palette"),
        (flat((255, 64, 0)), "demo", "flat, equally near red and orange: red (first)"),
        (boxes(c["black"], (255, 64, 0), [(10, 40, 10, 40)]), "demo", "shape equally near red and orange"),
        (boxes(c["black"], c["white"], [(20, 27, 20, 28)]), "demo", "7x8 = 56 px < min_area 61.44"),
        (boxes(c["black"], c["white"], [(20, 28, 20, 28)]), "demo", "8x8 = 64 px >= min_area"),
        (boxes(c["blue"], c["yellow"], [(5, 15, 5, 15), (40, 50, 40, 50)]), "demo", "two equal squares"),
        (boxes(c["blue"], c["yellow"], [(5, 15, 5, 15), (40, 51, 40, 50)]), "demo", "second square larger"),
        (boxes(c["red"], c["green"], [(14, 34, 20, 40)]), "demo", "box centre x exactly split_low"),
        (boxes(c["red"], c["green"], [(30, 50, 30, 50)]), "demo", "box centre x, y exactly split_high"),
        (boxes(c["red"], c["green"], [(29, 50, 29, 50)]), "demo", "box centre just under split_high"),
        (boxes(c["white"], c["purple"], [(10, 33, 10, 33)]), "demo", "extent exactly large_extent (23 px)"),
        (boxes(c["white"], c["purple"], [(10, 32, 10, 33)]), "demo", "extent 23 px high, 22 wide"),
        (boxes(c["white"], c["purple"], [(10, 32, 10, 32)]), "demo", "extent 22 px"),
        (boxes(c["cyan"], c["black"], [(0, 40, 0, 64)]), "demo", "shape covering most of the border"),
        (boxes(c["cyan"], c["black"], [(0, 32, 0, 64)]), "demo", "half and half"),
        (boxes(c["orange"], c["magenta"], [(0, 64, 0, 2)]), "demo", "shape in the border ring only"),
        (boxes((100, 100, 100), (140, 120, 100), [(10, 40, 10, 40)]), "demo", "shape nearer than fg_distance"),
        (boxes((0, 0, 0), (40, 40, 40), [(10, 40, 10, 40)]), "demo", "shape at distance 69 from black"),
    ]
    # Equidistant from black, so the colour quarter is a tie: the stable sort keeps raster order
    # and takes the top rows' orange-ish colour; any other order would take the green-ish one.
    img = boxes(c["black"], (100, 200, 0), [(10, 40, 10, 40)])
    img[10:20, 10:40] = (200, 100, 0)
    out.append((img, "demo", "equidistant shape colours: raster order decides"))
    # Side 80: the ring is round(2.5) = 2 pixels (half to even), not 3. The outer pixel row is
    # white, the next two rows black: the ring's median is white at 2 pixels, black at 3.
    img = flat(c["white"], 80)
    img[1:-1, 1:-1] = c["black"]
    img[3:-3, 3:-3] = c["blue"]
    img[30:50, 30:50] = c["yellow"]
    out.append((img, "demo", "side 80 frames: a 2-pixel ring (round half to even) sees white"))
    checker = np.indices((64, 64)).sum(0) % 2 == 1
    img = flat(c["red"])
    img[checker] = c["blue"]
    out.append((img, "demo", "1-pixel checkerboard: every component has 1 pixel"))
    img = flat(c["red"])
    img[(np.indices((64, 64)) // 8).sum(0) % 2 == 1] = c["blue"]
    out.append((img, "demo", "8-pixel checkerboard"))
    ramp = np.linspace(0, 255, 64).round().astype(np.uint8)
    img = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], np.full((64, 64), 128, np.uint8)), -1)
    out.append((np.ascontiguousarray(img), "demo", "two-axis gradient"))
    for k in range(3):
        out.append((rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "demo", f"uniform noise {k}"))
    out.append((rng.integers(100, 140, (32, 32, 3), dtype=np.uint8), "demo", "faint noise"))
    for side in (16, 80):
        scene = data.sample_scene(rng)
        out.append((data.render(scene, side), "demo", f"ring of side {side}: {scene}"))
    return out


def generated(model, threads):
    import torch

    from train import load_pipeline

    torch.set_num_threads(threads)
    pipe = load_pipeline(model)
    spec = json.loads((HERE / "eval_spec.json").read_text())
    items = spec["captions"]
    out = []
    for cfg in (7.5, 1.0):
        for i in range(0, len(items), 12):
            chunk = items[i : i + 12]
            images = pipe(
                [c["caption"] for c in chunk],
                num_inference_steps=spec["generation"]["steps"],
                guidance_scale=cfg,
                generator=[torch.Generator().manual_seed(c["seed"]) for c in chunk],
                output_type="np",
            ).images
            for c, img in zip(chunk, images):
                out.append(((img * 255).round().astype(np.uint8), "demo", f"cfg {cfg}: {c['caption']}"))
    return out


def answer(img, palette):
    m = evaluate.measure(img, PALETTES[palette])
    return {k: list(v) if isinstance(v, tuple) else v for k, v in m.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a diffusers-layout demo model (interim export)")
    ap.add_argument("--out", default=str(ROOT / "tests/fixtures/demo/evaluator"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    check_spec()
    rng = np.random.default_rng(args.seed)
    groups = clean_and_degraded(rng)
    groups["teal"] = teal_scenes(rng)
    groups["edge"] = edge_cases(rng)
    groups["generated"] = generated(args.model, args.threads)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    cases = []
    for group, images in groups.items():
        for side in sorted({img.shape[0] for img, _, _ in images}):
            strip = [(img, palette, about) for img, palette, about in images if img.shape[0] == side]
            name = f"{group}-{side}.png"
            Image.fromarray(np.concatenate([img for img, _, _ in strip], 0)).save(out / name, optimize=True)
            for index, (img, palette, about) in enumerate(strip):
                cases.append(
                    {"strip": name, "index": index, "side": side, "palette": palette, "about": about,
                     "measured": answer(img, palette)}
                )
    import diffusers
    import PIL
    import torch

    doc = {
        "about": "Answers of tools/demo/evaluate.py measure() on the PNG strips beside this file "
        "(written by tools/demo/evaluator_golden.py). Numbers are rounded to 3 decimals by measure().",
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "pillow": PIL.__version__,
                     "torch": torch.__version__, "diffusers": diffusers.__version__},
        "generated_with": {"model": str(args.model), "steps": 25, "cfg": [7.5, 1.0]},
        "palettes": {"teal": {TEAL[0]: list(TEAL[1])}},
        "cases": cases,
    }
    rows = ",\n".join("  " + json.dumps(c) for c in cases)
    head = json.dumps({k: v for k, v in doc.items() if k != "cases"}, indent=1)[:-2]
    (out / "cases.json").write_text(f'{head},\n "cases": [\n{rows}\n ]\n}}\n')
    counts = {g: len(v) for g, v in groups.items()}
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {len(cases)} cases {counts} to {out} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
