//! The LoRA scale of diffusers / PEFT files: diffusers writes each network's
//! PEFT `LoraConfig` into the safetensors metadata (`lora_adapter_metadata`,
//! a JSON object with `unet.r`, `unet.lora_alpha`, `unet.alpha_pattern`,
//! `unet.rank_pattern`, `unet.use_rslora`, and the same under
//! `text_encoder.`). A layer's alpha / rank come from the patterns when one
//! matches its module (PEFT's rule: the module name ends with `.<pattern>`
//! or is the pattern), else from `lora_alpha` / `r`; the scale is alpha / r
//! (alpha / sqrt(r) with `use_rslora`). An `.alpha` tensor in the file wins;
//! with neither, the scale is 1 (PEFT's alpha = r when none is saved).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::keys::Part;

/// A network's PEFT config, the fields that set the scale.
#[derive(Debug, Default)]
struct Config {
    r: Option<f64>,
    lora_alpha: Option<f64>,
    rank_pattern: BTreeMap<String, f64>,
    alpha_pattern: BTreeMap<String, f64>,
    use_rslora: bool,
}

/// The configs found in a file's metadata, per network.
#[derive(Debug, Default)]
pub struct AdapterConfigs {
    configs: BTreeMap<Part, Config>,
}

impl AdapterConfigs {
    /// Reads `lora_adapter_metadata`; absent: no configs. A DoRA config is refused.
    pub fn parse(metadata: &BTreeMap<String, String>) -> Result<AdapterConfigs, String> {
        let Some(text) = metadata.get("lora_adapter_metadata") else {
            return Ok(AdapterConfigs::default());
        };
        let json: Map<String, Value> = serde_json::from_str(text)
            .map_err(|e| format!("lora_adapter_metadata is not a JSON object: {e}"))?;
        let mut configs = BTreeMap::new();
        for (part, prefix) in [(Part::Unet, "unet."), (Part::TextEncoder, "text_encoder.")] {
            let field = |k: &str| json.get(&format!("{prefix}{k}"));
            if !json.keys().any(|k| k.starts_with(prefix)) {
                continue;
            }
            if field("use_dora").and_then(Value::as_bool) == Some(true) {
                return Err(format!("{prefix}use_dora is true: DoRA is not supported"));
            }
            let number = |k: &str| -> Result<Option<f64>, String> {
                match field(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(v) => v
                        .as_f64()
                        .filter(|x| x.is_finite() && *x > 0.0)
                        .map(Some)
                        .ok_or_else(|| format!("{prefix}{k} is {v}, expected a positive number")),
                }
            };
            let pattern = |k: &str| -> Result<BTreeMap<String, f64>, String> {
                match field(k) {
                    None | Some(Value::Null) => Ok(BTreeMap::new()),
                    Some(Value::Object(m)) => m
                        .iter()
                        .map(|(name, v)| {
                            v.as_f64()
                                .filter(|x| x.is_finite() && *x > 0.0)
                                .map(|x| (name.clone(), x))
                                .ok_or_else(|| {
                                    format!("{prefix}{k}[{name:?}] is {v}, expected a positive number")
                                })
                        })
                        .collect(),
                    Some(v) => Err(format!("{prefix}{k} is {v}, expected an object")),
                }
            };
            configs.insert(
                part,
                Config {
                    r: number("r")?,
                    lora_alpha: number("lora_alpha")?,
                    rank_pattern: pattern("rank_pattern")?,
                    alpha_pattern: pattern("alpha_pattern")?,
                    use_rslora: field("use_rslora").and_then(Value::as_bool).unwrap_or(false),
                },
            );
        }
        Ok(AdapterConfigs { configs })
    }

    /// The scale of the layer changing `module` of `part`, whose tensors have
    /// rank `rank`, with the file's `alpha` tensor if it has one.
    pub fn scale(&self, part: Part, module: &str, rank: usize, alpha: Option<f32>) -> Result<f32, String> {
        if let Some(a) = alpha {
            return Ok(a / rank as f32);
        }
        let Some(c) = self.configs.get(&part) else {
            return Ok(1.0);
        };
        let r = matching(&c.rank_pattern, module).or(c.r).unwrap_or(rank as f64);
        if r != rank as f64 {
            return Err(format!(
                "the metadata gives {module} rank {r}, its tensors have rank {rank}"
            ));
        }
        let alpha = matching(&c.alpha_pattern, module).or(c.lora_alpha).unwrap_or(r);
        Ok(if c.use_rslora {
            (alpha / r.sqrt()) as f32
        } else {
            (alpha / r) as f32
        })
    }
}

/// The value of the first pattern that `module` ends with (after a dot) or
/// equals; a pattern starting with `^` (as diffusers writes them) must be the
/// whole name. (PEFT reads patterns as regular expressions; module names have
/// no other special character than `.`, which then matches itself.)
fn matching(patterns: &BTreeMap<String, f64>, module: &str) -> Option<f64> {
    patterns
        .iter()
        .find(|(p, _)| match p.strip_prefix('^') {
            Some(whole) => module == whole,
            None => module == p.as_str() || module.ends_with(&format!(".{p}")),
        })
        .map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peft_config_scales() {
        let json = r#"{"unet.r": 4, "unet.lora_alpha": 8, "unet.rank_pattern": {"conv1": 2, "^up.conv": 1},
            "unet.alpha_pattern": {"down_blocks.0.resnets.0.conv1": 1}, "text_encoder.r": 4,
            "text_encoder.lora_alpha": 2, "text_encoder.use_rslora": true}"#;
        let meta = BTreeMap::from([("lora_adapter_metadata".to_string(), json.to_string())]);
        let c = AdapterConfigs::parse(&meta).unwrap();
        assert_eq!(
            c.scale(Part::Unet, "mid_block.attentions.0.proj_in", 4, None),
            Ok(2.0)
        );
        assert_eq!(
            c.scale(Part::Unet, "down_blocks.0.resnets.0.conv1", 2, None),
            Ok(0.5)
        );
        assert_eq!(
            c.scale(Part::Unet, "down_blocks.0.resnets.0.conv1", 2, Some(3.0)),
            Ok(1.5)
        );
        assert_eq!(c.scale(Part::Unet, "up.conv", 1, None), Ok(8.0));
        assert_eq!(
            c.scale(Part::Unet, "x.up.conv", 4, None),
            Ok(2.0),
            "^ anchors at the start"
        );
        assert_eq!(c.scale(Part::TextEncoder, "text_model.x", 4, None), Ok(1.0));
        assert!(c
            .scale(Part::Unet, "conv_in", 3, None)
            .unwrap_err()
            .contains("rank 4"));
        assert_eq!(AdapterConfigs::default().scale(Part::Unet, "a", 7, None), Ok(1.0));
        let dora = BTreeMap::from([(
            "lora_adapter_metadata".to_string(),
            r#"{"unet.use_dora": true}"#.to_string(),
        )]);
        assert!(AdapterConfigs::parse(&dora).unwrap_err().contains("DoRA"));
    }
}
