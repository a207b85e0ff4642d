"""Evaluator scores of VAE reconstructions whose latents are pushed away from their mean, as
classifier-free guidance pushes them: 200 encoded scenes (posterior means), each latent
mapped to mean + s (latent - mean) for s = 1, 2, 3, 5, 8, decoded and measured.

s = 1 is the reconstruction itself (the bound on what a UNet can reach through this
decoder); s > 1 tells whether the latent space keeps colours under overshoot.

  python tools/demo/vae_check.py RUN/decoder.pt     # a train.py VAE checkpoint
"""

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


if __name__ == "__main__":
    main()
