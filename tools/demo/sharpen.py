"""Stage `sharpen` of train.py: fine-tunes the VAE decoder against a patch discriminator, as SD's
own VAE was trained (reconstruction + adversarial loss), on the frozen encoder's latents.

Why: after stage `decoder`, small shapes (14-18 px, 2x2 latent cells) decode as rounded blobs.
The latent leaves some doubt between a small square, triangle and circle, and under an L1 + L2
loss the best answer to doubt is the blend of the three, which the evaluator reads as a circle
(measured on 400 encoded scenes: 89 of 191 small shapes misread, 3 of 209 large ones). A
classifier probe on the latents tells a small shape's class 77% of the time, so the latent
holds more than the blurred decoder shows. An adversarial loss makes the decoder commit to a
crisp shape.

Stage `colours` goes on from `sharpen` the same way with a share of the images in free colours
(any RGB colour, `data.sample_free_scene`, teal included): the decoder had only met the 10
palette colours and drew others as their nearest palette colour (`vae_check.py` on 200 scenes
in free colours: the shape colour 94 off in a channel at the 90th percentile, teal shapes 89
off in the median), so no UNet could have drawn a colour outside the palette through it.
After 2000 steps: 51 and 21.

The encoder does not change, so the UNet trained on stage `latents` stays valid.
"""

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import models


class PatchDiscriminator(nn.Module):
    """Scores overlapping ~34 px patches of a [B, 3, 64, 64] image as real or decoded:
    returns logits [B, 1, 14, 14]."""

    def __init__(self, width=32):
        super().__init__()

        def block(cin, cout, stride):
            return [nn.Conv2d(cin, cout, 4, stride, 1), nn.GroupNorm(8, cout), nn.LeakyReLU(0.2)]

        self.net = nn.Sequential(
            nn.Conv2d(3, width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            *block(width, 2 * width, 2),
            *block(2 * width, 4 * width, 1),
            nn.Conv2d(4 * width, 1, 4, 1, 1),
        )

    def forward(self, x):
        return self.net(x)


def adaptive_weight(rec_loss, adv_loss, last_layer):
    """Balances the two losses at the decoder's last layer (the taming-transformers rule):
    the adversarial gradient is scaled to the size of the reconstruction gradient."""
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv_loss, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, 1e4).detach()


def train_sharpen(args, name="sharpen"):
    """Stage `sharpen` (from stage `decoder`) or `colours` (from `sharpen`, its discriminator
    included, with free colours)."""
    from train import LossLog, load_checkpoint, log, lr_at, overshoot, resume, save_stage, vae_batch

    run = Path(args.run)
    ckpt_path = run / f"{name}.pt"
    colours = name == "colours"
    total, lr = args.colours_steps if colours else args.sharpen_steps, args.sharpen_lr
    torch.manual_seed(args.seed)
    vae = models.make_vae()
    disc = PatchDiscriminator()
    start = load_checkpoint(run / ("sharpen.pt" if colours else "decoder.pt"))
    vae.load_state_dict(start["model"])
    if colours:
        disc.load_state_dict(start["disc"])
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    trainable = [p for p in vae.parameters() if p.requires_grad]
    opt_g = torch.optim.Adam(trainable, lr=lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.9))
    step = resume(load_checkpoint(ckpt_path), model=vae, disc=disc, opt_g=opt_g, opt_d=opt_d)
    if step >= total:
        return
    log(run, f"{name}: decoder + patch discriminator, adversarial weight {args.adv_weight}, from step {step}")
    vae.train()
    last = vae.decoder.conv_out.weight
    meter = LossLog(run, name, args.log_every)
    while step < total:
        x = vae_batch(args, 13, step, free=args.colours_free) if colours else vae_batch(args, 12, step)  # [B, 3, H, W]
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample()  # [B, 4, h, w]
        z, scale = overshoot(z, with_scale=True)
        if colours:  # a scaled free colour shows as the clipped scaled colour
            x = (x * scale).clamp(-1, 1)
        y = vae.decode(z).sample  # [B, 3, H, W]
        rec = (y - x).abs().mean() + args.sharpen_l2 * (y - x).pow(2).mean()
        # Generator step: look real to the discriminator (hinge loss).
        adv = -disc(y).mean()
        weight = args.adv_weight * adaptive_weight(rec, adv, last) if args.adv_weight > 0 else torch.zeros(())
        for g in (*opt_g.param_groups, *opt_d.param_groups):
            g["lr"] = lr_at(step, None, lr, 100)
        opt_g.zero_grad(set_to_none=True)
        (rec + weight * adv).backward()
        opt_g.step()
        # Discriminator step on the same real and (detached) decoded images.
        d_real, d_fake = disc(x), disc(y.detach())
        d_loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        step += 1
        gap = d_real.mean() - d_fake.mean()
        meter.add(step, rec=rec.item(), adv=adv.item(), weight=weight.item(), d_loss=d_loss.item(), d_gap=gap.item())
        if step % args.ckpt_every == 0 or step == total:
            state = {"model": vae.state_dict(), "disc": disc.state_dict(), "step": step}
            state.update(opt_g=opt_g.state_dict(), opt_d=opt_d.state_dict())
            save_stage(run, name, step, state, x, y)
