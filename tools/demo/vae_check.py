"""Evaluator scores of VAE reconstructions whose latents are pushed away from their mean, as
classifier-free guidance pushes them: 200 encoded scenes (posterior means), each latent
mapped to mean + s (latent - mean) for s = 1, 2, 3, 5, 8, decoded and measured.

s = 1 is the reconstruction itself (the bound on what a UNet can reach through this
decoder); s > 1 tells whether the latent space keeps colours under overshoot.

Then the colour error of reconstructions of 200 scenes in free colours
(`data.sample_free_scene`) and 20 with a teal shape or background: the largest channel error
of the median colour of the shape and of the background, in 0..255.

  python tools/demo/vae_check.py RUN/decoder.pt     # a train.py VAE checkpoint
"""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import data  # noqa: E402
import evaluate  # noqa: E402
import models  # noqa: E402


def main():
    torch.set_num_threads(2)
    vae = models.make_vae()
    vae.load_state_dict(torch.load(sys.argv[1], map_location="cpu", weights_only=False)["model"])
    vae.eval()
    rng = np.random.default_rng(5)
    scenes = [data.sample_scene(rng) for _ in range(200)]
    x = torch.from_numpy(np.stack([data.render(s) for s in scenes])).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        mu = vae.encode(x).latent_dist.mean  # [200, 4, 8, 8]
        mean = mu.mean(0, keepdim=True)
        for s in (1, 2, 3, 5, 8):
            y = vae.decode(mean + s * (mu - mean)).sample.clamp(-1, 1)  # [200, 3, 64, 64]
            imgs = ((y + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
            found = [evaluate.measure(im) for im in imgs]
            acc = {a: np.mean([f[a] == sc.attributes()[a] for f, sc in zip(found, scenes)]) for a in data.ATTRIBUTES}
            print(f"s {s}: " + ", ".join(f"{a} {100 * v:.1f}%" for a, v in acc.items()))
    free = [data.sample_free_scene(rng) for _ in range(200)]
    teal = "#%02x%02x%02x" % data.UNSEEN_RGB
    teal_scenes = [dataclasses.replace(sc, **{("colour", "background")[i % 2]: teal}) for i, sc in enumerate(free[:20])]
    for name, group in (("free colours", free), ("teal", teal_scenes)):
        imgs = np.stack([data.render(sc) for sc in group])
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            y = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        out = ((y + 1) * 127.5).permute(0, 2, 3, 1).numpy()
        errs = []
        for sc, im in zip(group, out):
            m = data.shape_mask(sc, 64)
            errs.append([np.abs(np.median(im[k], 0) - data.rgb(c)).max() for k, c in ((m, sc.colour), (~m, sc.background))])
        e = np.array(errs)  # [N, 2]: shape, background
        print(f"{name}: colour error shape/background median {np.median(e[:, 0]):.0f}/{np.median(e[:, 1]):.0f}, 90th percentile {np.percentile(e[:, 0], 90):.0f}/{np.percentile(e[:, 1], 90):.0f}")


if __name__ == "__main__":
    main()
