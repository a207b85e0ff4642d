//! The value checks of the model configs, run before anything is built from
//! them: every size a model derives from its config is positive, consistent
//! with the others (list lengths, divisibility) and below a bound that no
//! real Stable Diffusion model comes near. A crafted `config.json` then gets
//! a message naming the file and the key instead of a division by zero or an
//! allocation of hundreds of gigabytes (issue 14). Every problem of a file is
//! reported at once, as the weight loader does.
//!
//! The bounds, with the largest value of SD 1.5 / SDXL for scale:

use std::path::Path;

use super::{ClipConfig, PerLevel, UNetConfig, VaeConfig};
use crate::text::CHUNK_LEN;
use crate::{Error, Result};

/// Channels of any layer, text width, latent channels (SD 1.5: 1280, SDXL: 2048).
pub const MAX_WIDTH: usize = 16_384;
/// The CLIP MLP's inner width (SD 1.5: 3072, OpenCLIP bigG: 5120).
pub const MAX_MLP_WIDTH: usize = 4 * MAX_WIDTH;
/// Resolution levels of a UNet or VAE (SD: 4).
pub const MAX_LEVELS: usize = 8;
/// Resnets per block, transformer layers per block, text encoder layers
/// (SD 1.5: 2 / 1 / 12, SDXL: 2 / 10 / 32).
pub const MAX_DEPTH: usize = 64;
/// The UNet's `sample_size`, latent pixels per side (SD 1.5: 64, SDXL: 128);
/// it sets the default image size, so it bounds what a run allocates.
pub const MAX_LATENT_SIDE: usize = 256;
/// The VAE's `sample_size`, its tile side in pixels (SD 1.5: 512, SDXL: 1024).
pub const MAX_IMAGE_SIDE: usize = 2048;
/// Text encoder vocabulary (CLIP: 49408).
pub const MAX_VOCAB: usize = 1 << 20;
/// Text encoder positions (CLIP: 77).
pub const MAX_POSITIONS: usize = 4096;

/// The problems found in one config file.
struct Problems<'a> {
    path: &'a Path,
    what: &'static str,
    found: Vec<String>,
}

impl<'a> Problems<'a> {
    fn new(path: &'a Path, what: &'static str) -> Self {
        Problems {
            path,
            what,
            found: Vec::new(),
        }
    }

    fn push(&mut self, key: &str, expected: impl std::fmt::Display, found: impl std::fmt::Display) {
        self.found
            .push(format!("`{key}` must be {expected}, found {found}"));
    }

    /// `min <= value <= max`; false (and recorded) otherwise.
    fn count(&mut self, key: &str, value: usize, min: usize, max: usize) -> bool {
        let ok = (min..=max).contains(&value);
        if !ok {
            self.push(key, format!("{min} to {max}"), value);
        }
        ok
    }

    /// A finite `value` with `0 < value <= max`.
    fn positive(&mut self, key: &str, value: f64, max: f64) {
        if !(value > 0.0 && value <= max) {
            self.push(key, format!("positive and at most {max}"), value);
        }
    }

    /// A list of `levels` counts in `min..=max`, or one count for every level.
    fn per_level(&mut self, key: &str, value: &PerLevel, levels: usize, min: usize, max: usize) -> bool {
        match value {
            PerLevel::One(v) => self.count(key, *v, min, max),
            PerLevel::Each(list) if list.len() != levels => {
                self.push(
                    key,
                    format!("one value or a list of {levels} (one per block level)"),
                    format!("a list of {}", list.len()),
                );
                false
            }
            PerLevel::Each(list) => {
                let bad: Vec<usize> = list
                    .iter()
                    .copied()
                    .filter(|v| !(min..=max).contains(v))
                    .collect();
                if !bad.is_empty() {
                    self.push(key, format!("{min} to {max} at every level"), shorten_list(list));
                }
                bad.is_empty()
            }
        }
    }

    fn finish(self) -> Result<()> {
        if self.found.is_empty() {
            return Ok(());
        }
        Err(Error::bad_file(
            self.path,
            format!("invalid {} config: {}", self.what, self.found.join("; ")),
        ))
    }
}

/// A JSON value for a message, cut to about 60 characters.
pub(super) fn shorten(value: &serde_json::Value) -> String {
    let s = value.to_string();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

fn shorten_list(list: &[usize]) -> String {
    shorten(&serde_json::json!(list))
}

/// Block widths: `1..=levels` of them, each in `1..=MAX_WIDTH` and a multiple
/// of `groups` (GroupNorm splits every width into `groups` groups). False
/// when the later checks cannot index them per level.
fn block_widths(p: &mut Problems, widths: &[usize], groups: usize) -> bool {
    if !(1..=MAX_LEVELS).contains(&widths.len()) {
        p.push(
            "block_out_channels",
            format!("a list of 1 to {MAX_LEVELS} widths"),
            format!("a list of {}", widths.len()),
        );
        return false;
    }
    if widths.iter().any(|&c| !(1..=MAX_WIDTH).contains(&c)) {
        p.push(
            "block_out_channels",
            format!("widths of 1 to {MAX_WIDTH}"),
            shorten_list(widths),
        );
        return false;
    }
    if p.count("norm_num_groups", groups, 1, MAX_WIDTH) && widths.iter().any(|c| !c.is_multiple_of(groups)) {
        p.push(
            "norm_num_groups",
            format!(
                "a divisor of every block_out_channels width {}",
                shorten_list(widths)
            ),
            groups,
        );
    }
    true
}

/// Block types: one per level.
fn block_types(p: &mut Problems, key: &str, types: &[String], levels: usize) -> bool {
    let ok = types.len() == levels;
    if !ok {
        p.push(
            key,
            format!("a list of {levels} (one per block_out_channels width)"),
            format!("a list of {}", types.len()),
        );
    }
    ok
}

pub(super) fn unet(c: &UNetConfig, path: &Path) -> Result<()> {
    let mut p = Problems::new(path, "UNet");
    p.count("in_channels", c.in_channels, 1, MAX_WIDTH);
    p.count("out_channels", c.out_channels, 1, MAX_WIDTH);
    p.count("sample_size", c.sample_size, 1, MAX_LATENT_SIDE);
    p.count("layers_per_block", c.layers_per_block, 1, MAX_DEPTH);
    p.count("cross_attention_dim", c.cross_attention_dim, 1, MAX_WIDTH);
    p.count("downsample_padding", c.downsample_padding, 0, 1);
    p.positive("norm_eps", c.norm_eps, 1.0);
    p.positive("mid_block_scale_factor", c.mid_block_scale_factor, 1e3);
    let widths = &c.block_out_channels;
    let levels = widths.len();
    let (heads_key, heads) = c.heads_key();
    let widths_ok = block_widths(&mut p, widths, c.norm_num_groups);
    let down_ok = block_types(&mut p, "down_block_types", &c.down_block_types, levels);
    let up_ok = block_types(&mut p, "up_block_types", &c.up_block_types, levels);
    let heads_ok = p.per_level(heads_key, heads, levels, 1, MAX_WIDTH);
    p.per_level(
        "transformer_layers_per_block",
        &c.transformer_layers_per_block,
        levels,
        1,
        MAX_DEPTH,
    );
    if widths_ok {
        // The sinusoid frequencies divide by `C0 / 2 - freq_shift`.
        let half = (widths[0] / 2) as f64;
        if !(c.freq_shift >= 0.0 && c.freq_shift < half) {
            p.push(
                "freq_shift",
                format!("at least 0 and below block_out_channels[0] / 2 = {half}"),
                c.freq_shift,
            );
        }
    }
    if widths_ok && down_ok && up_ok && heads_ok {
        // Attention splits a level's width into its heads.
        let attends = |level: usize| {
            c.down_block_types[level] == "CrossAttnDownBlock2D"
                || c.up_block_types[levels - 1 - level] == "CrossAttnUpBlock2D"
                || (level == levels - 1 && c.mid_block_type.is_some())
        };
        let bad: Vec<String> = (0..levels)
            .filter(|&l| attends(l) && !widths[l].is_multiple_of(c.heads(l)))
            .map(|l| format!("{} heads for width {}", c.heads(l), widths[l]))
            .collect();
        if !bad.is_empty() {
            p.push(
                heads_key,
                "a divisor of the block width at every level with attention",
                bad.join(", "),
            );
        }
    }
    p.finish()
}

pub(super) fn vae(c: &VaeConfig, path: &Path) -> Result<()> {
    let mut p = Problems::new(path, "VAE");
    // Images in and out are RGB.
    p.count("in_channels", c.in_channels, 3, 3);
    p.count("out_channels", c.out_channels, 3, 3);
    p.count("latent_channels", c.latent_channels, 1, MAX_WIDTH);
    p.count("layers_per_block", c.layers_per_block, 1, MAX_DEPTH);
    p.positive("scaling_factor", c.scaling_factor, 1e3);
    let levels = c.block_out_channels.len();
    let widths_ok = block_widths(&mut p, &c.block_out_channels, c.norm_num_groups);
    block_types(&mut p, "down_block_types", &c.down_block_types, levels);
    block_types(&mut p, "up_block_types", &c.up_block_types, levels);
    // Tiles are `sample_size` pixels, `sample_size / scale_factor` latents.
    if p.count("sample_size", c.sample_size, 1, MAX_IMAGE_SIDE)
        && widths_ok
        && !c.sample_size.is_multiple_of(c.scale_factor())
    {
        p.push(
            "sample_size",
            format!("a multiple of the VAE's scale factor {}", c.scale_factor()),
            c.sample_size,
        );
    }
    p.finish()
}

pub(super) fn clip(c: &ClipConfig, path: &Path) -> Result<()> {
    let mut p = Problems::new(path, "text encoder");
    p.count("vocab_size", c.vocab_size, 1, MAX_VOCAB);
    p.count("intermediate_size", c.intermediate_size, 1, MAX_MLP_WIDTH);
    p.count("num_hidden_layers", c.num_hidden_layers, 1, MAX_DEPTH);
    // Prompts are encoded in chunks of CHUNK_LEN tokens.
    p.count(
        "max_position_embeddings",
        c.max_position_embeddings,
        CHUNK_LEN,
        MAX_POSITIONS,
    );
    p.positive("layer_norm_eps", c.layer_norm_eps, 1.0);
    let width_ok = p.count("hidden_size", c.hidden_size, 1, MAX_WIDTH);
    if p.count("num_attention_heads", c.num_attention_heads, 1, MAX_WIDTH)
        && width_ok
        && !c.hidden_size.is_multiple_of(c.num_attention_heads)
    {
        p.push(
            "num_attention_heads",
            format!("a divisor of hidden_size {}", c.hidden_size),
            c.num_attention_heads,
        );
    }
    p.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts `r` failed with every needle in its message.
    fn refused(r: Result<()>, needles: &[&str]) {
        let e = r.unwrap_err().to_string();
        for needle in needles {
            assert!(e.contains(needle), "{needle:?} not in: {e}");
        }
    }

    #[test]
    fn zero_heads_and_groups_are_refused_not_divided_by() {
        let c = UNetConfig {
            attention_head_dim: PerLevel::One(0),
            norm_num_groups: 0,
            ..Default::default()
        };
        refused(
            c.validate(Path::new("unet/config.json")),
            &[
                "unet/config.json: invalid UNet config:",
                "`attention_head_dim` must be 1 to 16384, found 0",
                "`norm_num_groups` must be 1 to 16384, found 0",
            ],
        );
    }

    #[test]
    fn sizes_are_bounded_and_lists_consistent() {
        let huge = UNetConfig {
            block_out_channels: vec![1 << 30; 4],
            transformer_layers_per_block: PerLevel::Each(vec![1, 1]),
            ..Default::default()
        };
        refused(
            huge.validate(Path::new("u.json")),
            &[
                "`block_out_channels` must be widths of 1 to 16384",
                "`transformer_layers_per_block` must be one value or a list of 4",
            ],
        );
        // SD 2.x's per-level heads divide its widths.
        let sd2_heads = UNetConfig {
            num_attention_heads: Some(PerLevel::Each(vec![5, 10, 20, 20])),
            ..Default::default()
        };
        sd2_heads.validate(Path::new("u.json")).unwrap();
        let bad_heads = UNetConfig {
            num_attention_heads: Some(PerLevel::Each(vec![3, 10, 20, 20])),
            ..Default::default()
        };
        refused(
            bad_heads.validate(Path::new("u.json")),
            &["`num_attention_heads` must be a divisor", "3 heads for width 320"],
        );
        let short = UNetConfig {
            up_block_types: vec!["UpBlock2D".into(); 3],
            ..Default::default()
        };
        refused(
            short.validate(Path::new("u.json")),
            &["`up_block_types` must be a list of 4"],
        );
    }

    #[test]
    fn vae_and_text_encoder_values() {
        let vae = VaeConfig {
            sample_size: 500,
            scaling_factor: f64::NAN,
            ..Default::default()
        };
        refused(
            vae.validate(Path::new("vae/config.json")),
            &[
                "`sample_size` must be a multiple of the VAE's scale factor 8, found 500",
                "`scaling_factor` must be positive",
            ],
        );
        let no_levels = VaeConfig {
            block_out_channels: vec![],
            ..Default::default()
        };
        refused(
            no_levels.validate(Path::new("vae/config.json")),
            &["`block_out_channels` must be a list of 1 to 8 widths, found a list of 0"],
        );
        let clip = ClipConfig {
            num_attention_heads: 0,
            max_position_embeddings: 10,
            ..Default::default()
        };
        refused(
            clip.validate(Path::new("text_encoder/config.json")),
            &[
                "`num_attention_heads` must be 1 to 16384, found 0",
                "`max_position_embeddings` must be 77 to 4096, found 10",
            ],
        );
        let clip = ClipConfig {
            num_attention_heads: 5,
            ..Default::default()
        };
        refused(
            clip.validate(Path::new("t.json")),
            &["a divisor of hidden_size 768, found 5"],
        );
    }
}
