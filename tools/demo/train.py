"""Trains the demo model from scratch on the synthetic scenes of `data.py`, on a CPU.

Stages (each resumable from its last checkpoint in the run folder; `all` runs what is missing):
  vae      AutoencoderKL on rendered scenes: L1 + L2 on pixels + a small KL term.
  linear   Fine-tunes the whole VAE so that its latent is nearly linear in colour (channels 0-2
           follow the 8x8 block means of R, G, B; channel 3 is free for detail; a penalty keeps
           the posterior std small), and teaches the decoder that a latent scaled up by 1..3
           still shows the same image. Why: with classifier-free guidance the sampler
           extrapolates latents away from the unconditional prediction. In the first VAE's
           curved latent space, extrapolating "blue" led to "black" (measured: mean +
           2 (blue - mean) decodes to RGB (0, 0, 20)), and cfg 7.5 gave wrong colours. With a
           linear latent the palette colours, which are corners and edge mid-points of the RGB
           cube, stay themselves when scaled about grey.
  latents  Encodes a fixed training set with the VAE (posterior mean and std) and computes the
           latent scaling factor (1 / std of the latents, as SD's 0.18215 was).
  decoder  Fine-tunes the VAE decoder alone on the frozen encoder (the latents do not change,
           so this may run at the same time as `unet`, in a second process).
  sharpen  Fine-tunes that decoder against a patch discriminator, as SD's VAE was trained, so
           small shapes decode crisp instead of as blurred blobs (sharpen.py says why).
  colours  Goes on with `sharpen` with 30% of the images in free colours (any RGB colour), so
           the decoder draws colours outside the palette (sharpen.py says why).
  text     Pre-trains the text encoder to tell each caption's attributes (linear heads on its
           end-of-text states, discarded afterwards), so the UNet meets words that mean
           something (see train_text for why).
  unet     Text encoder + UNet, epsilon prediction on SD's DDPM schedule, min-SNR weighting,
           empty captions for classifier-free guidance, EMA of the weights. Switches, each
           from the step where it joined the run: high-noise weighting, the text encoder
           frozen, latents scaled as guidance scales them, captions with a wrong word,
           scenes in free colours (never teal, kept for textual inversion), free colours
           named by 39 colour words.
  export   Writes the diffusers folder (EMA weights, f16 safetensors) and a sample grid.

Everything is seeded: the data of step k is drawn from a generator seeded with (seed, k), so a
resumed run sees the same batches as an uninterrupted one.

  nice -n 10 python tools/demo/train.py all --run runs/demo/v2 --out assets/demo-model
"""

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import data  # noqa: E402
import models  # noqa: E402
from tokenizer_files import write_tokenizer  # noqa: E402


def log(run, msg):
    line = f"{time.strftime('%H:%M:%S')} {msg}"
    print(line, flush=True)
    with open(Path(run) / "train.log", "a") as f:
        f.write(line + "\n")


class LossLog:
    """Sums named losses over `every` steps, then logs their means and the time per step."""

    def __init__(self, run, name, every):
        self.run, self.name, self.every = run, name, every
        self.sums, self.t0 = {}, time.time()

    def add(self, step, **losses):
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        if step % self.every == 0:
            n = self.every
            parts = " ".join(f"{k} {v / n:.4g}" for k, v in self.sums.items())
            log(self.run, f"{self.name} step {step}: {parts} ({(time.time() - self.t0) / n:.2f} s/step)")
            self.sums, self.t0 = {}, time.time()


def save_stage(run, name, step, state, x, y):
    """Checkpoint of a VAE stage, and a grid of its inputs (top) and outputs (bottom)."""
    save_checkpoint(Path(run) / f"{name}.pt", state)
    save_grid(Path(run) / f"{name}-{step:06d}.png", np.concatenate([to_uint8(x[:8]), to_uint8(y[:8].detach())]))


def to_pixels(images):
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [-1, 1]."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1


def to_uint8(x):
    """float [B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3]."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def save_grid(path, images, cols=8):
    from PIL import Image

    rows = [np.concatenate(images[i : i + cols], 1) for i in range(0, len(images), cols)]
    rows[-1] = np.pad(rows[-1], ((0, 0), (0, rows[0].shape[1] - rows[-1].shape[1]), (0, 0)))
    Image.fromarray(np.concatenate(rows, 0)).save(path)


def lr_at(step, total, peak, warmup):
    """Linear warm-up, then cosine decay to peak / 10 at `total` (constant if total is None)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if total is None:
        return peak
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def load_checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None


def resume(state, **parts):
    """Loads each part (a module, optimizer or Ema, named by its checkpoint key) from a
    checkpoint's state; returns the step to continue from (0 without a checkpoint)."""
    if state is None:
        return 0
    for key, part in parts.items():
        part.load_state_dict(state[key])
    return state["step"]


def save_checkpoint(path, state):
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


# ---- stage 1: VAE ----


def train_vae(args, decoder_only=False):
    """Trains the whole VAE (stage `vae`), or only its decoder on the frozen encoder's latents
    (stage `decoder`, like SD's fine-tuned ft-MSE decoder, starting from stage `linear` and
    keeping its scaled-latent augmentation): the latents are then final, so the UNet can train
    on them while the decoder sharpens."""
    run = Path(args.run)
    name = "decoder" if decoder_only else "vae"
    total, peak = (args.decoder_steps, args.decoder_lr) if decoder_only else (args.vae_steps, args.vae_lr)
    ckpt_path = run / f"{name}.pt"
    torch.manual_seed(args.seed)
    vae = models.make_vae()
    with torch.no_grad():
        # Start the posterior std at e^-4 instead of 1, so the decoder sees the encoder's signal
        # from the first step rather than unit noise (the small KL term alone would take
        # thousands of steps to shrink it).
        vae.encoder.conv_out.bias[vae.config.latent_channels :] = -8.0
    if decoder_only:
        start = run / "linear.pt" if (run / "linear.pt").exists() else run / "vae.pt"
        vae.load_state_dict(load_checkpoint(start)["model"])
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
    trainable = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=peak, weight_decay=0.0)
    step = resume(load_checkpoint(ckpt_path), model=vae, opt=opt)
    if step >= total:
        return
    log(run, f"{name}: {sum(p.numel() for p in trainable) / 1e6:.2f}M trained params, from step {step}")
    vae.train()
    meter = LossLog(run, name, args.log_every)
    while step < total:
        x = vae_batch(args, 4 if decoder_only else 1, step)  # [B, 3, H, W]
        with torch.set_grad_enabled(not decoder_only):
            posterior = vae.encode(x).latent_dist
        z = posterior.sample()  # [B, 4, h, w]
        y = vae.decode(overshoot(z) if decoder_only else z).sample  # [B, 3, H, W]
        l1 = (y - x).abs().mean()
        l2 = (y - x).pow(2).mean()
        kl = posterior.kl().mean() / (4 * (models.IMAGE_SIDE // 8) ** 2)  # per latent element
        loss = l1 + l2 + (0.0 if decoder_only else args.kl_weight * kl)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, peak, 100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 10.0)
        opt.step()
        step += 1
        meter.add(step, l1=l1.item(), l2=l2.item(), kl=kl.item())
        if step % args.ckpt_every == 0 or step == total:
            save_stage(run, name, step, {"model": vae.state_dict(), "opt": opt.state_dict(), "step": step}, x, y)


def vae_batch(args, stream, step, free=0.0):
    """The images of step `step` of a VAE stage, [B, 3, H, W] in [-1, 1]: random training
    scenes from the generator seeded (seed, stream, step), a share `free` of them with a free
    colour (`data.sample_free_scene`, the unseen colour included). Seeds torch for the step too."""
    rng = np.random.default_rng([args.seed, stream, step])
    scenes = [
        data.sample_free_scene(rng, unseen=True) if free and rng.random() < free else data.sample_scene(rng)
        for _ in range(args.vae_batch)
    ]
    torch.manual_seed(args.seed * 1_000_003 + step)
    return to_pixels([data.render(s, models.IMAGE_SIDE) for s in scenes])


def final_vae_path(run):
    """The checkpoint of the last VAE stage that ran: `colours`, `sharpen`, `decoder`, `linear`
    or `vae`."""
    for name in ("colours", "sharpen", "decoder", "linear", "vae"):
        if (Path(run) / f"{name}.pt").exists():
            return Path(run) / f"{name}.pt"
    raise FileNotFoundError(f"no VAE checkpoint in {run}: run stage vae first")


def load_vae(args, path=None):
    """The VAE of the given checkpoint (default: the last VAE stage's). Returns the model and
    a description of its checkpoint."""
    path = path or final_vae_path(args.run)
    state = load_checkpoint(path)
    vae = models.make_vae()
    vae.load_state_dict(state["model"])
    return vae.eval(), f"{path.stem} {state['step']}"


def overshoot(z, generator=None, with_scale=False):
    """Scales the latents [B, 4, h, w] of the first half of the batch by 1..3 about zero
    (grey), as guidance overshoots; the decoder's target stays the image, which is what
    clipping the scaled colours of this palette (the RGB cube's corners and edge mid-points)
    gives. With `with_scale`, also returns the scales [B, 1, 1, 1], for images of other
    colours, whose target is the clipped scaled image."""
    b = z.shape[0]
    scale = torch.ones(b, 1, 1, 1)
    scale[: b // 2] = 1 + 2 * torch.rand(b // 2, 1, 1, 1, generator=generator)
    return (z * scale, scale) if with_scale else z * scale


def train_linear(args):
    """Stage `linear`: see the module docstring. Starts from stage `vae`."""
    run = Path(args.run)
    ckpt_path = run / "linear.pt"
    total, peak = args.linear_steps, args.linear_lr
    state = load_checkpoint(ckpt_path)
    if state is not None and state["step"] >= total:
        return
    vae, origin = load_vae(args, run / "vae.pt")
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=peak, weight_decay=0.0)
    step = resume(state, model=vae, opt=opt)
    log(run, f"linear: from {origin}, step {step}")
    meter = LossLog(run, "linear", args.log_every)
    while step < total:
        x = vae_batch(args, 5, step)  # [B, 3, H, W]
        posterior = vae.encode(x).latent_dist
        mean = posterior.mean  # [B, 4, h, w]
        colour = F.avg_pool2d(x, 8)  # [B, 3, h, w]: block means of R, G, B in [-1, 1]
        lin = F.mse_loss(mean[:, :3], colour) + args.free_channel_weight * mean[:, 3].pow(2).mean()
        y = vae.decode(overshoot(posterior.sample())).sample  # [B, 3, H, W]
        l1 = (y - x).abs().mean()
        l2 = (y - x).pow(2).mean()
        # Keeps the posterior std small (the latents must be what the UNet learns, not noise):
        # with the KL term alone it grew to 0.58 in this stage and clean latents decoded wrongly.
        var = posterior.var.mean()
        loss = l1 + l2 + args.linear_weight * lin + args.var_weight * var
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, peak, 100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 10.0)
        opt.step()
        step += 1
        meter.add(step, l1=l1.item(), l2=l2.item(), lin=lin.item(), var=var.item())
        if step % args.ckpt_every == 0 or step == total:
            save_stage(run, "linear", step, {"model": vae.state_dict(), "opt": opt.state_dict(), "step": step}, x, y)


# ---- stage 2: latents of a fixed training set ----


def encode_latents(args):
    run = Path(args.run)
    path = run / "latents.pt"
    if path.exists():
        return
    vae, origin = load_vae(args)
    rng = np.random.default_rng([args.seed, 2])
    scenes = [data.sample_scene(rng) for _ in range(args.n_latents)]
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(scenes), 256):
            x = to_pixels([data.render(s, models.IMAGE_SIDE) for s in scenes[i : i + 256]])
            posterior = vae.encode(x).latent_dist
            means.append(posterior.mean)  # [b, 4, h, w]
            stds.append(posterior.std)
    mean, std = torch.cat(means), torch.cat(stds)  # [N, 4, h, w]
    # SD's factor: 1 / std of the (sampled) latents over the training data.
    sample = mean + std * torch.randn(mean.shape, generator=torch.Generator().manual_seed(args.seed))
    scaling_factor = float(1 / sample.std())
    log(run, f"latents ({origin}): {len(scenes)} scenes, latent std {sample.std():.4f}, scaling_factor {scaling_factor:.5f}")
    torch.save(
        {"mean": mean, "std": std, "scenes": scenes, "scaling_factor": scaling_factor},
        path,
    )


# ---- stage 3: text encoder pre-training ----


def train_text(args):
    """Stage `text`: teaches the text encoder what the caption words mean before it meets the
    UNet, as SD's CLIP text encoder came pre-trained. Linear heads (thrown away afterwards) read
    each attribute from the mean hidden state of the end-of-text token and the padding after
    it (the positions that, under the causal mask, have seen the whole caption), with "unsaid"
    as an extra class when a caption leaves the size or position out or is empty.

    Why: trained jointly from random weights, the first model's text encoder never learned the
    position words (their hidden states differed by 1.7 where colour words differed by 11,
    norms 8) and the UNet ignored them: position accuracy stayed at chance."""
    run = Path(args.run)
    ckpt_path = run / "text.pt"
    write_tokenizer(run / "tokenizer")
    captions = Captions(run / "tokenizer")
    torch.manual_seed(args.seed)
    text_encoder = models.make_text_encoder()
    classes = {
        "colour": list(data.COLOURS) + ["unsaid"],
        "shape": list(data.SHAPES) + ["unsaid"],
        "background": list(data.COLOURS) + ["unsaid"],
        "size": list(data.SIZES) + ["unsaid"],
        "position": list(data.POSITIONS) + ["unsaid"],
    }
    heads = torch.nn.ModuleDict({a: torch.nn.Linear(models.TEXT_WIDTH, len(c)) for a, c in classes.items()})
    params = list(text_encoder.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=args.text_lr, weight_decay=0.0)
    step = resume(load_checkpoint(ckpt_path), text_encoder=text_encoder, heads=heads, opt=opt)
    if step >= args.text_steps:
        return
    log(run, f"text: from step {step}")
    eos = models.TEXT_CONFIG["eos_token_id"]
    text_encoder.train()
    meter = LossLog(run, "text", args.log_every)
    while step < args.text_steps:
        rng = np.random.default_rng([args.seed, 6, step])
        texts, labels = [], {a: [] for a in classes}
        for _ in range(args.text_batch):
            scene = data.sample_scene(rng)
            if rng.random() < args.caption_dropout:
                texts.append("")
                for a in classes:
                    labels[a].append(classes[a].index("unsaid"))
                continue
            text = data.caption(rng, scene)
            texts.append(text)
            words = text.replace(",", " ").split()
            for a in classes:
                value = getattr(scene, a)
                said = True
                if a == "size":
                    said = any(w in words for w in data.SIZE_WORDS[value])
                elif a == "position":
                    said = any(p in text for p in data.POSITION_WORDS[value])
                labels[a].append(classes[a].index(value if said else "unsaid"))
        ids = captions.ids(texts)  # [B, 77]
        hidden = text_encoder(ids).last_hidden_state  # [B, 77, TEXT_WIDTH]
        # The end-of-text token (the first 49407; padding repeats it) and everything after it.
        first_eos = (ids == eos).int().argmax(1, keepdim=True)  # [B, 1]
        after = (torch.arange(ids.shape[1])[None, :] >= first_eos).float()[..., None]  # [B, 77, 1]
        pooled = (hidden * after).sum(1) / after.sum(1)  # [B, TEXT_WIDTH]
        losses = [F.cross_entropy(heads[a](pooled), torch.tensor(labels[a])) for a in classes]
        loss = sum(losses)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.text_steps, args.text_lr, 100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        meter.add(step, loss=loss.item(), **{a: l.item() for a, l in zip(classes, losses)})
        if step % args.ckpt_every == 0 or step == args.text_steps:
            save_checkpoint(
                ckpt_path,
                {"text_encoder": text_encoder.state_dict(), "heads": heads.state_dict(), "opt": opt.state_dict(), "step": step},
            )


# ---- stage 4: text encoder + UNet ----


class Captions:
    """Tokenizes captions with the shipped tokenizer files, caching the ids of each caption."""

    def __init__(self, folder):
        from transformers import CLIPTokenizer

        self.tokenizer = CLIPTokenizer.from_pretrained(str(folder))
        self.cache = {}

    def ids(self, texts):
        missing = [t for t in texts if t not in self.cache]
        if missing:
            out = self.tokenizer(missing, padding="max_length", max_length=77, truncation=True).input_ids
            self.cache.update(zip(missing, out))
        return torch.tensor([self.cache[t] for t in texts])  # [B, 77]


class Ema:
    """Exponential moving average of parameters, with the usual warm-up of the decay."""

    def __init__(self, modules, decay):
        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay = decay

    @torch.no_grad()
    def update(self, step):
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - d)

    def state_dict(self):
        return self.shadow

    def load_state_dict(self, shadow):
        self.shadow = shadow

    @torch.no_grad()
    def reset(self, module):
        """Sets the averages of `module`'s parameters to their current values."""
        ids = {id(p) for p in module.parameters()}
        for i, p in enumerate(self.params):
            if id(p) in ids:
                self.shadow[i] = p.detach().clone()

    @torch.no_grad()
    def copy_to(self, modules):
        for p, s in zip([p for m in modules for p in m.parameters()], self.shadow):
            p.copy_(s)


def noisy_caption(rng, scene, name_free=False):
    """A caption of `scene` with one attribute changed to another value (never naming a
    held-out (colour, shape, background) triple)."""
    values = {
        "colour": list(data.COLOURS),
        "shape": list(data.SHAPES),
        "background": list(data.COLOURS),
        "size": list(data.SIZES),
        "position": list(data.POSITIONS),
    }
    truth = scene.attributes()
    while True:
        a = dict(truth)
        key = data.ATTRIBUTES[rng.integers(len(data.ATTRIBUTES))]
        a[key] = values[key][rng.integers(len(values[key]))]
        triple = (a["colour"], a["shape"], a["background"])
        if a != truth and a["colour"] != a["background"] and triple not in data.HELD_OUT:
            break
    wrong = data.place(rng, a["colour"], a["shape"], a["background"], a["size"], a["position"])
    return data.caption(rng, wrong, name_free=name_free)


def train_unet(args):
    run = Path(args.run)
    ckpt_path = run / "unet.pt"
    write_tokenizer(run / "tokenizer")
    captions = Captions(run / "tokenizer")
    cache = torch.load(run / "latents.pt", weights_only=False)
    lat_mean, lat_std, scenes = cache["mean"], cache["std"], cache["scenes"]
    scale = cache["scaling_factor"]
    torch.manual_seed(args.seed)
    text_encoder, unet = models.make_text_encoder(), models.make_unet()
    if (run / "text.pt").exists():  # stage `text`
        text_encoder.load_state_dict(load_checkpoint(run / "text.pt")["text_encoder"])
    modules = (text_encoder, unet)
    params = [p for m in modules for p in m.parameters()]
    # The text encoder starts from random embeddings and must learn every word from this data
    # alone, so it gets a larger learning rate than the UNet (`--text-lr-factor`).
    opt = torch.optim.AdamW(
        [
            {"params": list(unet.parameters()), "lr_factor": 1.0},
            {"params": list(text_encoder.parameters()), "lr_factor": args.text_lr_factor},
        ],
        lr=args.unet_lr,
        weight_decay=0.0,
    )
    ema = Ema(modules, args.ema_decay)
    step = resume(load_checkpoint(ckpt_path), text_encoder=text_encoder, unet=unet, opt=opt, ema=ema)
    if step >= args.unet_steps:
        return
    n_text = sum(p.numel() for p in text_encoder.parameters())
    n_unet = sum(p.numel() for p in unet.parameters())
    log(run, f"unet: {n_unet / 1e6:.2f}M params, text encoder {n_text / 1e6:.2f}M, from step {step}")
    encoder = load_vae(args)[0] if args.free_colour else None
    schedule = models.make_training_scheduler()
    alphas_cumprod = schedule.alphas_cumprod  # [1000]
    snr = alphas_cumprod / (1 - alphas_cumprod)
    text_encoder.train()
    unet.train()
    meter = LossLog(run, "unet", args.log_every)
    frozen = False
    while step < args.unet_steps:
        if step >= args.freeze_text_from and not frozen:
            # From here on the text encoder is stage `text`'s, frozen, as SD's CLIP encoder is.
            # Why: trained jointly, the UNet's gradient wore the position words away from the
            # pre-trained encoder (the end-of-text state of "top left" vs "bottom right"
            # differed by 8.8 after stage `text` and by 0.28 after 3000 joint steps, while
            # colours kept 4.2), and the shape did not move when the caption's position did.
            text_encoder.load_state_dict(load_checkpoint(run / "text.pt")["text_encoder"])
            text_encoder.requires_grad_(False)
            text_encoder.eval()
            ema.reset(text_encoder)
            params = list(unet.parameters())
            frozen = True
            log(run, f"unet step {step}: text encoder frozen (stage text's weights)")
        rng = np.random.default_rng([args.seed, 3, step])
        idx = rng.integers(len(scenes), size=args.unet_batch)
        batch = [scenes[i] for i in idx]
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        latents = (lat_mean[idx] + lat_std[idx] * torch.randn(lat_std[idx].shape, generator=g)) * scale
        if args.free_colour and step >= args.free_colour_from:
            # Some scenes get a free colour (data.sample_free_scene says why), encoded here as
            # stage `latents` encoded the rest (the encoder is the same).
            free = np.flatnonzero(rng.random(len(idx)) < args.free_colour)
            for j in free:
                batch[j] = data.sample_free_scene(rng)
            if len(free):
                with torch.no_grad():
                    post = encoder.encode(to_pixels([data.render(batch[j], models.IMAGE_SIDE) for j in free])).latent_dist
                    latents[free] = (post.mean + post.std * torch.randn(post.std.shape, generator=g)) * scale
        # From `--colour-names-from` free colours are named (data.EXTRA_COLOURS): left unnamed,
        # the colour came from the noise alone and no text could steer it, so a textual-
        # inversion token found no colour outside the palette (train_ti.py `<teal>`: 9 to 14 of 64
        # images teal at step 15500). With 39 colour words the text steers a continuum.
        named = step >= args.colour_names_from
        texts = ["" if rng.random() < args.caption_dropout else data.caption(rng, s, name_free=named) for s in batch]
        if step >= args.caption_noise_from:
            # Real captions get details wrong. Without such captions the model never learned
            # whom to trust when the image and the caption disagree, as in img2img: at
            # strength 0.2 a red square prompted "blue" came out purple in 12 of 12 images
            # (step 8000, cfg 2). With a wrong word now and then, the truth is the image
            # wherever the noise still shows it.
            texts = [noisy_caption(rng, s, named) if t and rng.random() < args.caption_noise else t for t, s in zip(texts, batch)]
        ids = captions.ids(texts)  # [B, 77]
        b = latents.shape[0]  # latents: [B, 4, h, w]
        if step >= args.overshoot_from:
            # Half the batch is scaled by 1..3, as for the decoder (`overshoot`): guidance
            # drives the sampler through such over-saturated latents, and a UNet that never
            # saw them turned them into blotches at cfg 7.5 (colour 42% at step 5000, 94% at
            # cfg 1). The decoder shows a scaled latent as the same image, so nothing else
            # changes.
            latents = overshoot(latents, g)
        noise = torch.randn(latents.shape, generator=g)
        if args.offset_noise:
            noise += args.offset_noise * torch.randn((b, 4, 1, 1), generator=g)
        t = torch.randint(0, len(alphas_cumprod), (b,), generator=g)
        a = alphas_cumprod[t].view(b, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        with torch.set_grad_enabled(not frozen):
            hidden = text_encoder(ids).last_hidden_state  # [B, 77, TEXT_WIDTH]
        pred = unet(noisy, t, hidden).sample  # [B, 4, h, w]
        weight = torch.clamp(snr[t], max=args.min_snr_gamma) / snr[t]  # min-SNR-gamma for epsilon
        if step >= args.high_noise_from:
            # Epsilon loss weighs an x0 error e by SNR (e^2 SNR): at the noisy steps, where the
            # layout is decided and only the caption can say where the shape goes, knowing the
            # position changes the loss by almost nothing (SNR 0.02 at t = 900). The first
            # 2000 steps did not move the shape at all when the caption's position changed.
            # So the noisy steps get up to `--high-noise-weight` times more weight (x0 loss,
            # 1 / SNR, capped).
            weight = weight * torch.clamp(1 / snr[t], min=1.0, max=args.high_noise_weight)
        loss = (weight * F.mse_loss(pred, noise, reduction="none").mean((1, 2, 3))).mean()
        for group in opt.param_groups:
            # Constant after warm-up (the EMA does the averaging), so a run can be extended.
            group["lr"] = group["lr_factor"] * lr_at(step, None, args.unet_lr, 500)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(step)
        step += 1
        meter.add(step, loss=loss.item())
        if step % args.ckpt_every == 0 or step == args.unet_steps:
            save_checkpoint(
                ckpt_path,
                {
                    "text_encoder": text_encoder.state_dict(),
                    "unet": unet.state_dict(),
                    "opt": opt.state_dict(),
                    "ema": ema.state_dict(),
                    "step": step,
                },
            )
            if step % args.sample_every == 0 or step == args.unet_steps:
                export(args, run / f"model-{step:06d}", quiet=True)
                sample_grid(run / f"model-{step:06d}", run / f"samples-{step:06d}.png", args.seed)


# ---- stage 5: export ----


def versions():
    import diffusers
    import transformers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__}


def export(args, out, quiet=False):
    """Writes the diffusers folder from the EMA weights, in f16 safetensors."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from safetensors.torch import load_file, save_file

    run, out = Path(args.run), Path(out)
    cache = torch.load(run / "latents.pt", weights_only=False)
    state = load_checkpoint(run / "unet.pt")
    vae = models.make_vae(scaling_factor=round(cache["scaling_factor"], 5))
    trained_vae, vae_step = load_vae(args)
    vae.load_state_dict(trained_vae.state_dict())
    text_encoder, unet = models.make_text_encoder(), models.make_unet()
    for p, s in zip([p for m in (text_encoder, unet) for p in m.parameters()], state["ema"]):
        p.data.copy_(s)
    write_tokenizer(run / "tokenizer")
    from transformers import CLIPTokenizer

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(str(run / "tokenizer")),
        unet=unet,
        scheduler=DDIMScheduler.from_config(models.SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(torch.float16)
    pipe.save_pretrained(out, safe_serialization=True)
    # transformers 5 saves a tokenizer.json; ship SD 1.5's files (vocab.json + merges.txt) instead.
    shutil.rmtree(out / "tokenizer")
    write_tokenizer(out / "tokenizer")
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(models.SCHEDULER_CONFIG, indent=2) + "\n")
    meta = dict(versions(), generator="tools/demo/train.py", unet_step=str(state["step"]), vae_step=vae_step)
    meta["unet_weights"] = "EMA"
    for f in out.glob("*/*.safetensors"):
        tensors = load_file(f)
        assert all(t.dtype == torch.float16 for t in tensors.values()), f
        save_file(tensors, f, metadata={"format": "pt", **meta})
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    if not quiet:
        log(run, f"exported {out} ({size / 1e6:.1f} MB), unet step {state['step']}, {vae_step}")


def load_pipeline(folder, img2img=False):
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    cls = StableDiffusionImg2ImgPipeline if img2img else StableDiffusionPipeline
    pipe = cls.from_pretrained(str(folder), torch_dtype=torch.float32, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


SAMPLE_PROMPTS = (
    "a red circle on a blue background",
    "small yellow triangle in the top left corner, black background",
    "a large green square at the bottom on white",
    "a big white circle in the centre on a purple background",
    "an orange triangle on the right, cyan background",
    "a small magenta square in the bottom right corner on a green background",
    "a black circle at the top on a yellow background",
    "",
)


def sample_grid(folder, path, seed, steps=20):
    pipe = load_pipeline(folder)
    images = []
    for cfg in (7.5, 1.0):
        for i, prompt in enumerate(SAMPLE_PROMPTS):
            g = torch.Generator().manual_seed(seed + i)
            out = pipe(prompt, num_inference_steps=steps, guidance_scale=cfg, generator=g, output_type="np")
            images.append((out.images[0] * 255).round().astype(np.uint8))
    save_grid(path, images, cols=len(SAMPLE_PROMPTS))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=("vae", "linear", "latents", "decoder", "sharpen", "colours", "text", "unet", "export", "all"))
    ap.add_argument("--run", default="runs/demo/main", help="checkpoints, logs, samples")
    ap.add_argument("--out", default="assets/demo-model", help="diffusers folder written by export")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vae-steps", type=int, default=4000)
    ap.add_argument("--decoder-steps", type=int, default=3000)
    ap.add_argument("--decoder-lr", type=float, default=1e-4)
    ap.add_argument("--sharpen-steps", type=int, default=1500)
    ap.add_argument("--sharpen-lr", type=float, default=1e-4)
    ap.add_argument("--colours-steps", type=int, default=2000)
    ap.add_argument("--colours-free", type=float, default=0.3, help="share of free-colour images in stage colours")
    ap.add_argument("--adv-weight", type=float, default=0.1)
    ap.add_argument("--sharpen-l2", type=float, default=1.0, help="weight of L2 next to L1 in stage sharpen")
    ap.add_argument("--vae-batch", type=int, default=8)
    ap.add_argument("--vae-lr", type=float, default=2e-4)
    ap.add_argument("--kl-weight", type=float, default=1e-6)
    ap.add_argument("--linear-steps", type=int, default=3000)
    ap.add_argument("--linear-lr", type=float, default=2e-4)
    ap.add_argument("--linear-weight", type=float, default=1.0)
    ap.add_argument("--free-channel-weight", type=float, default=0.1)
    ap.add_argument("--var-weight", type=float, default=1.0)
    ap.add_argument("--n-latents", type=int, default=20000)
    ap.add_argument("--text-steps", type=int, default=1000)
    ap.add_argument("--text-batch", type=int, default=128)
    ap.add_argument("--text-lr", type=float, default=1e-3)
    ap.add_argument("--unet-steps", type=int, default=17500)
    ap.add_argument("--unet-batch", type=int, default=48)
    ap.add_argument("--unet-lr", type=float, default=4e-4)
    ap.add_argument("--text-lr-factor", type=float, default=2.0)
    ap.add_argument("--overshoot-from", type=int, default=5250, help="step from which it applies")
    ap.add_argument("--freeze-text-from", type=int, default=3250, help="step from which it is frozen")
    ap.add_argument("--ema-decay", type=float, default=0.999)
    ap.add_argument("--caption-dropout", type=float, default=0.15)
    ap.add_argument("--caption-noise", type=float, default=0.1, help="share of captions with one attribute wrong")
    ap.add_argument("--caption-noise-from", type=int, default=9500, help="step from which it applies")
    ap.add_argument("--free-colour", type=float, default=0.25, help="share of scenes with a free colour")
    ap.add_argument("--free-colour-from", type=int, default=13000, help="step from which it applies")
    ap.add_argument("--colour-names-from", type=int, default=15500, help="step from which free colours are named")
    ap.add_argument("--offset-noise", type=float, default=0.0)
    ap.add_argument("--min-snr-gamma", type=float, default=5.0)
    ap.add_argument("--high-noise-weight", type=float, default=8.0)
    ap.add_argument("--high-noise-from", type=int, default=2250, help="step from which it applies")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--ckpt-every", type=int, default=250)
    ap.add_argument("--sample-every", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    Path(args.run).mkdir(parents=True, exist_ok=True)
    if args.stage in ("vae", "all"):
        train_vae(args)
    if args.stage in ("linear", "all"):
        train_linear(args)
    if args.stage in ("latents", "all"):
        encode_latents(args)
    if args.stage in ("decoder", "all"):
        train_vae(args, decoder_only=True)
    if args.stage in ("sharpen", "all"):
        from sharpen import train_sharpen

        train_sharpen(args)
    if args.stage in ("colours", "all"):
        from sharpen import train_sharpen

        train_sharpen(args, "colours")
    if args.stage in ("text", "all"):
        train_text(args)
    if args.stage in ("unet", "all"):
        train_unet(args)
    if args.stage in ("export", "all"):
        export(args, args.out)
        sample_grid(args.out, Path(args.run) / "samples-final.png", args.seed)


if __name__ == "__main__":
    main()
