#!/usr/bin/env python3
"""CPU side by side: `sd-wgpu txt2img --backend cpu` against diffusers on
torch's CPU backend, same model, same settings, in one run (opt-in; needs a
Python with torch and diffusers, see README "Benchmarks").

The model is the full SD 1.5 architecture with seeded random weights (built
by tools/compare_full_size.py, stored f16 as SD 1.5 files ship; both engines
compute in f32), with the CLIP tokenizer and DDIM scheduler config of
assets/demo-model. Each engine runs as a fresh process for `--steps-lo` and
`--steps-hi` DDIM steps (guidance 7.5, one image, the same prompt and seed),
alternating engines (torch lo, ours lo, torch hi, ours hi), so both see the
same machine load. Per guided step = (time(hi) - time(lo)) / (hi - lo),
which cancels loading, text encoding and VAE decoding. Peak RSS is each
process's own maximum (`wait4`), for the `hi` run: weights, activations and
the VAE decode included.

    /work/refenv/bin/python tools/cpu_side_by_side.py --out /tmp/sd15-random \
        --binary target/release/sd-wgpu --sizes 256,512 --threads 2
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROMPT = "a watercolour painting of a lighthouse on a cliff at dawn"


def build_model(out):
    """The random SD 1.5 diffusers folder, built once."""
    if not os.path.exists(os.path.join(out, "unet", "config.json")):
        sys.path.insert(0, HERE)
        import compare_full_size
        os.makedirs(out, exist_ok=True)
        compare_full_size.build(out)
    demo = os.path.join(HERE, "..", "assets", "demo-model")
    for part in ["tokenizer", "scheduler"]:
        if not os.path.exists(os.path.join(out, part)):
            shutil.copytree(os.path.join(demo, part), os.path.join(out, part))
    shutil.copy(os.path.join(demo, "model_index.json"), out)


def torch_child(a):
    """Runs inside the child process: one diffusers txt2img."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    torch.set_num_threads(a.threads)
    pipe = StableDiffusionPipeline.from_pretrained(a.out, torch_dtype=torch.float32, safety_checker=None)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        pipe(PROMPT, num_inference_steps=a.steps, guidance_scale=7.5, height=a.size, width=a.size, generator=g)


def run(cmd):
    """Wall seconds and peak RSS (bytes) of one child process."""
    t = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    secs = time.time() - t
    if status != 0:
        sys.exit(f"failed ({status}): {' '.join(cmd)}")
    return secs, usage.ru_maxrss * 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="model folder (built there on the first run)")
    ap.add_argument("--binary", default="target/release/sd-wgpu")
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--steps-lo", type=int, default=2)
    ap.add_argument("--steps-hi", type=int, default=6)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return torch_child(a)
    build_model(a.out)
    env_threads = {"RAYON_NUM_THREADS": str(a.threads)}
    os.environ.update(env_threads)
    print(f"threads {a.threads}; steps {a.steps_lo} and {a.steps_hi}; DDIM, guidance 7.5; "
          f"machine: {os.uname().machine}, {os.cpu_count()} CPUs", flush=True)
    for size in [int(s) for s in a.sizes.split(",") if s]:
        times = {}
        for steps in [a.steps_lo, a.steps_hi]:
            torch_cmd = [sys.executable, __file__, "--child", "--out", a.out, "--threads", str(a.threads),
                         "--size", str(size), "--steps", str(steps)]
            ours_cmd = [a.binary, "txt2img", "--model", a.out, "--backend", "cpu", "--dtype", "f32",
                        "--sampler", "ddim", "--steps", str(steps), "--cfg-scale", "7.5", "--seed", "0",
                        "--width", str(size), "--height", str(size), "--prompt", PROMPT,
                        "--output", f"/tmp/side_by_side_{size}.png", "--overwrite", "--quiet"]
            for engine, cmd in [("torch", torch_cmd), ("sd-wgpu", ours_cmd)]:
                times[engine, steps] = run(cmd)
                secs, rss = times[engine, steps]
                print(f"  {size}x{size} {engine:<8} {steps} steps: {secs:7.2f} s, peak RSS "
                      f"{rss / 2**30:.2f} GiB", flush=True)
        per = {e: (times[e, a.steps_hi][0] - times[e, a.steps_lo][0]) / (a.steps_hi - a.steps_lo)
               for e in ["torch", "sd-wgpu"]}
        rss = {e: times[e, a.steps_hi][1] / 2**30 for e in ["torch", "sd-wgpu"]}
        print(f"{size}x{size}: s per guided step: torch {per['torch']:.2f}, sd-wgpu {per['sd-wgpu']:.2f}, "
              f"ratio {per['sd-wgpu'] / per['torch']:.2f}; peak RSS GiB: torch {rss['torch']:.2f}, "
              f"sd-wgpu {rss['sd-wgpu']:.2f}", flush=True)


if __name__ == "__main__":
    main()
