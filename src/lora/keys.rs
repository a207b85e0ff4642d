//! The one place that maps LoRA key names to the weights of our models (the
//! diffusers names of [`crate::checkpoint::open`]: UNet `down_blocks.0...`,
//! text encoder `text_model.encoder...`).
//!
//! - kohya / A1111: `lora_unet_<module path, dots as underscores>` and
//!   `lora_te_<...>`. The underscore form is ambiguous
//!   (`transformer_blocks_0_attn1_to_q` has underscores of both kinds), so it
//!   is never split: the underscore form of every real module name is built
//!   and looked up.
//! - diffusers / PEFT: `unet.<module path>.lora_A.weight` (and `text_encoder.`),
//!   older `...lora.down.weight`, `...lora_linear_layer.down.weight`, and the
//!   attention-processor names `...attn1.processor.to_q_lora.down.weight`
//!   (`to_out_lora` is `to_out.0`; in the text encoder `q_proj` ... `out_proj`).

use std::collections::{BTreeSet, HashMap};

use crate::weights::TensorSource;

/// Which network a LoRA layer changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    Unet,
    TextEncoder,
}

impl Part {
    pub fn name(self) -> &'static str {
        match self {
            Part::Unet => "UNet",
            Part::TextEncoder => "text encoder",
        }
    }
}

/// What a key of a LoRA file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `lora_down` / `lora_A`: `[r, in]` or `[r, in, kh, kw]`.
    Down,
    /// `lora_up` / `lora_B`: `[out, r]` or `[out, r, 1, 1]`.
    Up,
    /// The scalar alpha (scale = alpha / r).
    Alpha,
}

/// The modules of one network a LoRA can change: weights of two or more
/// dimensions (linears and convolutions), by module name (`.weight` removed).
pub struct ModuleIndex {
    part: Part,
    modules: BTreeSet<String>,
    /// Underscore form -> module; `None` when two modules share the form.
    underscored: HashMap<String, Option<String>>,
}

impl ModuleIndex {
    pub fn new(part: Part, source: &dyn TensorSource) -> ModuleIndex {
        let mut modules = BTreeSet::new();
        let mut underscored: HashMap<String, Option<String>> = HashMap::new();
        for name in source.names() {
            let Some(module) = name.strip_suffix(".weight") else {
                continue;
            };
            if source.info(&name).is_none_or(|i| i.shape.len() < 2) {
                continue;
            }
            underscored
                .entry(module.replace('.', "_"))
                .and_modify(|m| *m = None)
                .or_insert_with(|| Some(module.to_string()));
            modules.insert(module.to_string());
        }
        ModuleIndex {
            part,
            modules,
            underscored,
        }
    }

    /// The module of a kohya name with its `lora_unet_` / `lora_te_` prefix removed.
    pub fn kohya(&self, stem: &str) -> Option<String> {
        self.underscored.get(stem).cloned().flatten()
    }

    /// The module of a diffusers / PEFT path (prefix and suffix removed). A
    /// text encoder saved by transformers 5 has no `text_model.` level.
    pub fn dotted(&self, path: &str) -> Option<String> {
        let mut candidates = vec![path.to_string()];
        if self.part == Part::TextEncoder && !path.starts_with("text_model.") {
            candidates.push(format!("text_model.{path}"));
        }
        candidates.into_iter().find(|c| self.modules.contains(c))
    }
}

/// Splits a kohya key `lora_unet_<stem>.<suffix>` into part, stem and role.
/// `None` for keys of other formats or suffixes this is not.
pub fn kohya_key(key: &str) -> Option<(Part, &str, Option<Role>)> {
    let (head, suffix) = key.split_once('.')?;
    let (part, stem) = if let Some(s) = head.strip_prefix("lora_unet_") {
        (Part::Unet, s)
    } else if let Some(s) = head.strip_prefix("lora_te_") {
        (Part::TextEncoder, s)
    } else {
        return None;
    };
    let role = match suffix {
        "lora_down.weight" => Some(Role::Down),
        "lora_up.weight" => Some(Role::Up),
        "alpha" => Some(Role::Alpha),
        _ => None,
    };
    Some((part, stem, role))
}

/// Splits a diffusers / PEFT key into part, module path (as the file names
/// it; see [`ModuleIndex::dotted`]) and role. `None` when the key is not one.
pub fn diffusers_key(key: &str) -> Option<(Part, String, Role)> {
    let (part, rest) = if let Some(r) = key.strip_prefix("unet.") {
        (Part::Unet, r)
    } else if let Some(r) = key.strip_prefix("text_encoder.") {
        (Part::TextEncoder, r)
    } else {
        // diffusers' first `save_attn_procs` files had UNet paths without a prefix.
        (Part::Unet, key)
    };
    const SUFFIXES: [(&str, Role); 7] = [
        (".lora_A.weight", Role::Down),
        (".lora_B.weight", Role::Up),
        (".lora.down.weight", Role::Down),
        (".lora.up.weight", Role::Up),
        (".lora_linear_layer.down.weight", Role::Down),
        (".lora_linear_layer.up.weight", Role::Up),
        (".alpha", Role::Alpha),
    ];
    for (suffix, role) in SUFFIXES {
        if let Some(path) = rest.strip_suffix(suffix) {
            if let Some(p) = processor_path(part, path) {
                return Some((part, p, role));
            }
            return Some((part, path.to_string(), role));
        }
    }
    for (suffix, role) in [(".down.weight", Role::Down), (".up.weight", Role::Up)] {
        if let Some(path) = rest.strip_suffix(suffix) {
            return processor_path(part, path).map(|p| (part, p, role));
        }
    }
    None
}

/// `X.processor.to_q_lora` -> `X.to_q` (UNet), `X.to_q_lora` -> `X.q_proj`
/// (text encoder): the attention-processor names of diffusers before PEFT.
fn processor_path(part: Part, path: &str) -> Option<String> {
    let (parent, leaf) = path.rsplit_once('.')?;
    let which = leaf.strip_prefix("to_")?.strip_suffix("_lora")?;
    let parent = parent.strip_suffix(".processor").unwrap_or(parent);
    let module = match (part, which) {
        (Part::Unet, "q" | "k" | "v") => format!("to_{which}"),
        (Part::Unet, "out") => "to_out.0".into(),
        (Part::TextEncoder, "q" | "k" | "v" | "out") => format!("{which}_proj"),
        _ => return None,
    };
    Some(format!("{parent}.{module}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::MemorySource;

    fn index(part: Part, names: &[&str]) -> ModuleIndex {
        let mut src = MemorySource::new();
        for n in names {
            src.insert(*n, &[2, 2], vec![0.0; 4]);
        }
        src.insert("norm.weight", &[2], vec![0.0; 2]);
        ModuleIndex::new(part, &src)
    }

    #[test]
    fn kohya_names_are_looked_up_not_split() {
        let ix = index(
            Part::Unet,
            &[
                "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
                "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.weight",
                "up_blocks.1.resnets.2.conv_shortcut.weight",
            ],
        );
        let (part, stem, role) = kohya_key(
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0.lora_up.weight",
        )
        .unwrap();
        assert_eq!((part, role), (Part::Unet, Some(Role::Up)));
        assert_eq!(
            ix.kohya(stem).as_deref(),
            Some("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0")
        );
        assert_eq!(
            ix.kohya("up_blocks_1_resnets_2_conv_shortcut").as_deref(),
            Some("up_blocks.1.resnets.2.conv_shortcut")
        );
        assert_eq!(ix.kohya("norm"), None, "1-D weights are no LoRA target");
        assert_eq!(ix.kohya("down_blocks_0_attentions_0_proj_in"), None);
    }

    #[test]
    fn ambiguous_underscore_forms_match_nothing() {
        let ix = index(Part::Unet, &["a.b_c.weight", "a_b.c.weight"]);
        assert_eq!(ix.kohya("a_b_c"), None);
    }

    #[test]
    fn diffusers_names() {
        let k = |s: &str| diffusers_key(s).unwrap();
        assert_eq!(
            k("unet.mid_block.attentions.0.proj_in.lora_A.weight"),
            (Part::Unet, "mid_block.attentions.0.proj_in".into(), Role::Down)
        );
        assert_eq!(
            k("text_encoder.text_model.encoder.layers.1.mlp.fc2.lora_B.weight"),
            (
                Part::TextEncoder,
                "text_model.encoder.layers.1.mlp.fc2".into(),
                Role::Up
            )
        );
        assert_eq!(
            k("down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora.down.weight"),
            (
                Part::Unet,
                "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0".into(),
                Role::Down
            )
        );
        assert_eq!(
            k("text_encoder.text_model.encoder.layers.0.self_attn.to_k_lora.up.weight"),
            (
                Part::TextEncoder,
                "text_model.encoder.layers.0.self_attn.k_proj".into(),
                Role::Up
            )
        );
        assert_eq!(
            k("unet.conv_in.alpha"),
            (Part::Unet, "conv_in".into(), Role::Alpha)
        );
        assert_eq!(diffusers_key("unet.conv_in.weight"), None);
        let te = index(Part::TextEncoder, &["text_model.encoder.layers.0.mlp.fc1.weight"]);
        assert_eq!(
            te.dotted("encoder.layers.0.mlp.fc1").as_deref(),
            Some("text_model.encoder.layers.0.mlp.fc1"),
            "transformers 5 paths"
        );
    }
}
