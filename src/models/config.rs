//! Model hyper-parameters, read from diffusers `config.json` files so the same
//! code runs a tiny test model and SD 1.5. `Default` is SD 1.5 in every case
//! (used for single-file checkpoints, which carry no config).
//!
//! Unknown keys are ignored (diffusers adds many that keep their defaults);
//! keys that would change the architecture to one we do not implement are
//! refused by `validate` with a message naming the key, and every size is
//! checked (positive, consistent, bounded: `config/validate.rs`) before a model is
//! built from it.
//!
//! Precision keys need nothing: `upcast_attention` (SD 2.1: attention scores
//! and softmax in f32) is what the attention kernels always do, whatever the
//! storage type, and the VAE's `force_upcast` is what the pipeline always does
//! (it runs the VAE in f32). Both are ignored like any unknown key.

mod validate;

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::{Error, Result};

pub use self::validate::{
    MAX_DEPTH, MAX_IMAGE_SIDE, MAX_LATENT_SIDE, MAX_LEVELS, MAX_MLP_WIDTH, MAX_POSITIONS, MAX_VOCAB,
    MAX_WIDTH,
};

/// An int or a per-level list in diffusers configs (`attention_head_dim`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged, expecting = "an integer or a list of integers, one per block level")]
pub enum PerLevel {
    One(usize),
    Each(Vec<usize>),
}

impl PerLevel {
    pub fn at(&self, level: usize) -> usize {
        match self {
            PerLevel::One(v) => *v,
            PerLevel::Each(v) => v[level.min(v.len() - 1)],
        }
    }
}

/// diffusers `UNet2DConditionModel`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub sample_size: usize,
    pub block_out_channels: Vec<usize>,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub mid_block_type: Option<String>,
    pub layers_per_block: usize,
    /// In SD 1.x configs this is the number of heads (a historic misnomer in
    /// diffusers), used when `num_attention_heads` is absent.
    pub attention_head_dim: PerLevel,
    pub num_attention_heads: Option<PerLevel>,
    pub cross_attention_dim: usize,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub downsample_padding: usize,
    pub use_linear_projection: bool,
    pub transformer_layers_per_block: PerLevel,
    pub act_fn: String,
    pub center_input_sample: bool,
    pub only_cross_attention: bool,
    pub class_embed_type: Option<String>,
    pub addition_embed_type: Option<String>,
    pub time_embedding_type: String,
    pub resnet_time_scale_shift: String,
    pub conv_in_kernel: usize,
    pub conv_out_kernel: usize,
    pub time_cond_proj_dim: Option<usize>,
    pub mid_block_scale_factor: f64,
    /// Variants that change the arithmetic without changing the weights
    /// (so loading would not notice them); refused unless at their defaults.
    pub resnet_out_scale_factor: f64,
    pub resnet_skip_time_act: bool,
    pub time_embedding_act_fn: Option<String>,
    pub timestep_post_act: Option<String>,
}

impl Default for UNetConfig {
    fn default() -> Self {
        UNetConfig {
            in_channels: 4,
            out_channels: 4,
            sample_size: 64,
            block_out_channels: vec![320, 640, 1280, 1280],
            down_block_types: [
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ]
            .map(String::from)
            .to_vec(),
            up_block_types: [
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ]
            .map(String::from)
            .to_vec(),
            mid_block_type: Some("UNetMidBlock2DCrossAttn".into()),
            layers_per_block: 2,
            attention_head_dim: PerLevel::One(8),
            num_attention_heads: None,
            cross_attention_dim: 768,
            norm_num_groups: 32,
            norm_eps: 1e-5,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            downsample_padding: 1,
            use_linear_projection: false,
            transformer_layers_per_block: PerLevel::One(1),
            act_fn: "silu".into(),
            center_input_sample: false,
            only_cross_attention: false,
            class_embed_type: None,
            addition_embed_type: None,
            time_embedding_type: "positional".into(),
            resnet_time_scale_shift: "default".into(),
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            time_cond_proj_dim: None,
            mid_block_scale_factor: 1.0,
            resnet_out_scale_factor: 1.0,
            resnet_skip_time_act: false,
            time_embedding_act_fn: None,
            timestep_post_act: None,
        }
    }
}

impl UNetConfig {
    /// Heads of the attention layers at `level` (0 = highest resolution).
    pub fn heads(&self, level: usize) -> usize {
        self.heads_key().1.at(level)
    }

    /// The key the heads come from, `num_attention_heads` when set (newer
    /// configs), else `attention_head_dim`, and its value.
    fn heads_key(&self) -> (&'static str, &PerLevel) {
        match &self.num_attention_heads {
            Some(h) => ("num_attention_heads", h),
            None => ("attention_head_dim", &self.attention_head_dim),
        }
    }

    /// Refuses configurations this implementation does not run, then checks
    /// every size the UNet is built from (`config/validate.rs`).
    pub fn validate(&self, path: &Path) -> Result<()> {
        self.supported(path)?;
        validate::unet(self, path)
    }

    fn supported(&self, path: &Path) -> Result<()> {
        let bad = |key: &str, found: String, want: &str| {
            Err(Error::Unsupported(format!(
                "{}: UNet config `{key}` is {found}; sd-wgpu supports {want}",
                path.display()
            )))
        };
        for t in &self.down_block_types {
            if t != "CrossAttnDownBlock2D" && t != "DownBlock2D" {
                return bad(
                    "down_block_types",
                    format!("{t:?}"),
                    "CrossAttnDownBlock2D and DownBlock2D",
                );
            }
        }
        for t in &self.up_block_types {
            if t != "CrossAttnUpBlock2D" && t != "UpBlock2D" {
                return bad(
                    "up_block_types",
                    format!("{t:?}"),
                    "CrossAttnUpBlock2D and UpBlock2D",
                );
            }
        }
        match self.mid_block_type.as_deref() {
            None | Some("UNetMidBlock2DCrossAttn") => {}
            Some(t) => return bad("mid_block_type", format!("{t:?}"), "UNetMidBlock2DCrossAttn"),
        }
        if self.act_fn != "silu" {
            return bad("act_fn", format!("{:?}", self.act_fn), "\"silu\"");
        }
        if self.class_embed_type.is_some() || self.addition_embed_type.is_some() {
            return bad(
                "class_embed_type/addition_embed_type",
                "set".into(),
                "none (SD 1.x)",
            );
        }
        if self.time_embedding_type != "positional" {
            return bad(
                "time_embedding_type",
                format!("{:?}", self.time_embedding_type),
                "\"positional\"",
            );
        }
        if self.resnet_time_scale_shift != "default" {
            return bad(
                "resnet_time_scale_shift",
                format!("{:?}", self.resnet_time_scale_shift),
                "\"default\"",
            );
        }
        if self.time_cond_proj_dim.is_some() || self.only_cross_attention || self.center_input_sample {
            return bad(
                "time_cond_proj_dim/only_cross_attention/center_input_sample",
                "set".into(),
                "defaults",
            );
        }
        if self.resnet_out_scale_factor != 1.0
            || self.resnet_skip_time_act
            || self.time_embedding_act_fn.is_some()
            || self.timestep_post_act.is_some()
        {
            return bad(
                "resnet_out_scale_factor/resnet_skip_time_act/time_embedding_act_fn/timestep_post_act",
                "set".into(),
                "defaults (1.0/false/null/null)",
            );
        }
        if self.conv_in_kernel != 3 || self.conv_out_kernel != 3 {
            return bad(
                "conv_in_kernel/conv_out_kernel",
                format!("{}/{}", self.conv_in_kernel, self.conv_out_kernel),
                "3",
            );
        }
        Ok(())
    }
}

/// diffusers `AutoencoderKL`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub latent_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub layers_per_block: usize,
    pub norm_num_groups: usize,
    pub act_fn: String,
    pub sample_size: usize,
    pub scaling_factor: f64,
    pub shift_factor: Option<f64>,
    pub mid_block_add_attention: bool,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
}

impl Default for VaeConfig {
    fn default() -> Self {
        VaeConfig {
            in_channels: 3,
            out_channels: 3,
            latent_channels: 4,
            block_out_channels: vec![128, 256, 512, 512],
            down_block_types: vec!["DownEncoderBlock2D".into(); 4],
            up_block_types: vec!["UpDecoderBlock2D".into(); 4],
            layers_per_block: 2,
            norm_num_groups: 32,
            act_fn: "silu".into(),
            sample_size: 512,
            scaling_factor: 0.18215,
            shift_factor: None,
            mid_block_add_attention: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
        }
    }
}

impl VaeConfig {
    /// Pixels per latent pixel: 2^(levels - 1), 8 for SD.
    pub fn scale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }

    /// Refuses VAEs other than SD's kind, then checks every size the VAE is
    /// built from (`config/validate.rs`).
    pub fn validate(&self, path: &Path) -> Result<()> {
        let ok_types = self.down_block_types.iter().all(|t| t == "DownEncoderBlock2D")
            && self.up_block_types.iter().all(|t| t == "UpDecoderBlock2D");
        if !ok_types || self.act_fn != "silu" || self.shift_factor.is_some_and(|s| s != 0.0) {
            return Err(Error::Unsupported(format!(
                "{}: VAE config is not an SD-style AutoencoderKL (block types {:?}/{:?}, act_fn {:?}, shift_factor {:?})",
                path.display(),
                self.down_block_types,
                self.up_block_types,
                self.act_fn,
                self.shift_factor
            )));
        }
        validate::vae(self, path)
    }
}

/// transformers `CLIPTextConfig`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ClipConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
}

impl Default for ClipConfig {
    fn default() -> Self {
        ClipConfig {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

impl ClipConfig {
    /// Refuses activations other than CLIP's, then checks every size the
    /// encoder is built from (`config/validate.rs`).
    pub fn validate(&self, path: &Path) -> Result<()> {
        if !matches!(self.hidden_act.as_str(), "quick_gelu" | "gelu") {
            return Err(Error::Unsupported(format!(
                "{}: text encoder hidden_act {:?}; sd-wgpu supports quick_gelu and gelu",
                path.display(),
                self.hidden_act
            )));
        }
        validate::clip(self, path)
    }
}

/// Reads a component `config.json` (callers `validate` it once the model
/// family is known). A value of the wrong type is reported with its key.
pub fn read_config<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::bad_file(path, format!("invalid config.json: {e}")))?;
    T::deserialize(&json).map_err(|e| {
        // serde's message names the type, not the key: find the key whose
        // value alone fails (every field has a default, so others parse).
        let culprit = json.as_object().and_then(|map| {
            map.iter().find(|&(k, v)| {
                let alone = serde_json::Value::Object([(k.clone(), v.clone())].into_iter().collect());
                T::deserialize(&alone).is_err()
            })
        });
        match culprit {
            Some((key, value)) => Error::bad_file(
                path,
                format!(
                    "invalid config.json: `{key}` is {}: {e}",
                    validate::shorten(value)
                ),
            ),
            None => Error::bad_file(path, format!("invalid config.json: {e}")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd15_unet_config_parses_to_default() {
        let json = r#"{"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0",
            "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
            "center_input_sample": false, "cross_attention_dim": 768,
            "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4,
            "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
            "out_channels": 4, "sample_size": 64,
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}"#;
        let c: UNetConfig = serde_json::from_str(json).unwrap();
        assert_eq!(c, UNetConfig::default());
        assert_eq!(c.heads(2), 8);
        c.validate(Path::new("unet/config.json")).unwrap();
    }

    #[test]
    fn refuses_unknown_blocks() {
        let c = UNetConfig {
            down_block_types: vec!["SimpleCrossAttnDownBlock2D".into(); 4],
            ..Default::default()
        };
        let e = c.validate(Path::new("x/config.json")).unwrap_err().to_string();
        assert!(
            e.contains("down_block_types") && e.contains("SimpleCrossAttnDownBlock2D"),
            "{e}"
        );
        let c = UNetConfig {
            timestep_post_act: Some("silu".into()),
            ..Default::default()
        };
        let e = c.validate(Path::new("x/config.json")).unwrap_err().to_string();
        assert!(e.contains("timestep_post_act"), "{e}");
    }

    #[test]
    fn each_time_key_is_named_in_its_own_error() {
        let c = UNetConfig {
            resnet_time_scale_shift: "scale_shift".into(),
            ..Default::default()
        };
        let e = c.validate(Path::new("x/config.json")).unwrap_err().to_string();
        assert!(
            e.contains("`resnet_time_scale_shift` is \"scale_shift\"") && !e.contains("time_embedding_type"),
            "{e}"
        );
    }

    #[test]
    fn read_config_names_the_key_of_a_bad_value() {
        let path = std::env::temp_dir().join(format!("sdw-config-{}.json", std::process::id()));
        std::fs::write(&path, r#"{"in_channels": 4, "block_out_channels": [320, -1]}"#).unwrap();
        let e = read_config::<UNetConfig>(&path).unwrap_err().to_string();
        assert!(
            e.contains("`block_out_channels` is [320,-1]") && e.contains("expected usize"),
            "{e}"
        );
        std::fs::write(&path, r#"{"attention_head_dim": "eight"}"#).unwrap();
        let e = read_config::<UNetConfig>(&path).unwrap_err().to_string();
        assert!(
            e.contains("`attention_head_dim` is \"eight\": an integer or a list of integers"),
            "{e}"
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn vae_scale_factor() {
        assert_eq!(VaeConfig::default().scale_factor(), 8);
    }
}
