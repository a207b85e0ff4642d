//! Multiply-add counts of one forward pass, from the config and input size,
//! for benchmarks (TFLOP/s = 2 * MACs / seconds). Counted: convolutions,
//! linear layers and the two attention products (Q K^T and P V); norms and
//! element-wise ops are memory-bound and left out, as is customary.

use super::config::{ClipConfig, UNetConfig, VaeConfig};

fn conv(c_in: usize, c_out: usize, k: usize, pixels: usize) -> f64 {
    (c_in * c_out * k * k * pixels) as f64
}

/// Resnet at `pixels` pixels (with a time projection from `temb` when given).
fn resnet(c_in: usize, c_out: usize, pixels: usize, temb: Option<usize>) -> f64 {
    let shortcut = if c_in != c_out {
        conv(c_in, c_out, 1, pixels)
    } else {
        0.0
    };
    conv(c_in, c_out, 3, pixels)
        + conv(c_out, c_out, 3, pixels)
        + shortcut
        + temb.map_or(0.0, |t| (t * c_out) as f64)
}

/// Attention products for `lq` queries over `lk` keys at total width `c`.
fn attention(lq: usize, lk: usize, c: usize) -> f64 {
    2.0 * (lq * lk * c) as f64
}

/// Spatial transformer at width `c` over `n` pixels with `l` text tokens of width `dc`.
fn transformer(c: usize, n: usize, l: usize, dc: usize, layers: usize) -> f64 {
    let (c, nf) = (c as f64, n as f64);
    let block = 4.0 * c * c * nf + attention(n, n, c as usize) // self-attention
        + 2.0 * c * c * nf + 2.0 * (l * dc) as f64 * c + attention(n, l, c as usize) // cross
        + 12.0 * c * c * nf; // GEGLU feed-forward: C -> 8C, 4C -> C
    2.0 * c * c * nf + layers as f64 * block
}

/// One UNet evaluation of a `[batch, C, h, w]` latent with `l` context tokens.
pub fn unet_macs(cfg: &UNetConfig, batch: usize, h: usize, w: usize, l: usize) -> f64 {
    let ch = &cfg.block_out_channels;
    let levels = ch.len();
    let t = 4 * ch[0];
    let dc = cfg.cross_attention_dim;
    let tf = |level: usize, c: usize, n: usize| {
        transformer(c, n, l, dc, cfg.transformer_layers_per_block.at(level))
    };
    // Spatial size per level (stride-2 convs round up).
    let mut sizes = vec![(h, w)];
    for _ in 1..levels {
        let (a, b) = *sizes.last().unwrap();
        sizes.push((a.div_ceil(2), b.div_ceil(2)));
    }
    let px = |level: usize| sizes[level].0 * sizes[level].1;
    let mut m = (ch[0] * t + t * t) as f64 + conv(cfg.in_channels, ch[0], 3, px(0));
    // Down path, tracking skip widths.
    let mut skips = vec![ch[0]];
    for level in 0..levels {
        let cross = cfg.down_block_types[level] == "CrossAttnDownBlock2D";
        let c_out = ch[level];
        let mut c = if level == 0 { ch[0] } else { ch[level - 1] };
        for _ in 0..cfg.layers_per_block {
            m += resnet(c, c_out, px(level), Some(t));
            if cross {
                m += tf(level, c_out, px(level));
            }
            c = c_out;
            skips.push(c);
        }
        if level + 1 < levels {
            m += conv(c_out, c_out, 3, px(level + 1));
            skips.push(c_out);
        }
    }
    let last = levels - 1;
    if cfg.mid_block_type.is_some() {
        m += 2.0 * resnet(ch[last], ch[last], px(last), Some(t)) + tf(last, ch[last], px(last));
    }
    let mut c = ch[last];
    for i in 0..levels {
        let level = last - i;
        let cross = cfg.up_block_types[i] == "CrossAttnUpBlock2D";
        for _ in 0..cfg.layers_per_block + 1 {
            let skip = skips.pop().expect("skip per up resnet");
            m += resnet(c + skip, ch[level], px(level), Some(t));
            if cross {
                m += tf(level, ch[level], px(level));
            }
            c = ch[level];
        }
        if level > 0 {
            m += conv(c, c, 3, px(level - 1));
        }
    }
    m += conv(ch[0], cfg.out_channels, 3, px(0));
    m * batch as f64
}

/// One text-encoder pass over `l` tokens.
pub fn clip_macs(cfg: &ClipConfig, l: usize) -> f64 {
    let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
    let layer = (4 * l * d * d + 2 * l * d * f) as f64 + attention(l, l, d) / 2.0; // causal: half the pairs
    cfg.num_hidden_layers as f64 * layer
}

/// VAE mid block at width `c` over `n` pixels.
fn vae_mid(c: usize, n: usize) -> f64 {
    2.0 * resnet(c, c, n, None) + 4.0 * (n * c * c) as f64 + attention(n, n, c)
}

/// Decoding `[batch, Z, h, w]` latents (post_quant_conv included).
pub fn vae_decode_macs(cfg: &VaeConfig, batch: usize, h: usize, w: usize) -> f64 {
    let rev: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
    let z = cfg.latent_channels;
    let mut px = h * w;
    let mut m = conv(z, z, 1, px) + conv(z, rev[0], 3, px) + vae_mid(rev[0], px);
    let mut c = rev[0];
    for (i, &c_out) in rev.iter().enumerate() {
        for _ in 0..cfg.layers_per_block + 1 {
            m += resnet(c, c_out, px, None);
            c = c_out;
        }
        if i + 1 < rev.len() {
            px *= 4;
            m += conv(c, c, 3, px);
        }
    }
    m += conv(c, cfg.out_channels, 3, px);
    m * batch as f64
}

/// Encoding a `[batch, 3, H, W]` image (quant_conv included).
pub fn vae_encode_macs(cfg: &VaeConfig, batch: usize, h: usize, w: usize) -> f64 {
    let ch = &cfg.block_out_channels;
    let (mut hh, mut ww) = (h, w);
    let mut m = conv(cfg.in_channels, ch[0], 3, hh * ww);
    let mut c = ch[0];
    for (i, &c_out) in ch.iter().enumerate() {
        for _ in 0..cfg.layers_per_block {
            m += resnet(c, c_out, hh * ww, None);
            c = c_out;
        }
        if i + 1 < ch.len() {
            (hh, ww) = (hh / 2, ww / 2);
            m += conv(c, c, 3, hh * ww);
        }
    }
    let z2 = 2 * cfg.latent_channels;
    m += vae_mid(c, hh * ww) + conv(c, z2, 3, hh * ww) + conv(z2, z2, 1, hh * ww);
    m * batch as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd15_figures() {
        // Published figures: ~0.44 TMAC per 64x64 latent, CLIP-L 6-9 GMAC,
        // VAE decoder at 512^2 ~1.27 TMAC.
        let unet = unet_macs(&UNetConfig::default(), 1, 64, 64, 77);
        assert!((0.40e12..0.46e12).contains(&unet), "{unet:e}");
        let clip = clip_macs(&ClipConfig::default(), 77);
        assert!((6e9..9e9).contains(&clip), "{clip:e}");
        let dec = vae_decode_macs(&VaeConfig::default(), 1, 64, 64);
        assert!((1.2e12..1.3e12).contains(&dec), "{dec:e}");
        let enc = vae_encode_macs(&VaeConfig::default(), 1, 512, 512);
        assert!(enc > 0.4e12 && enc < dec, "{enc:e}");
    }
}
