//! The flags several subcommands share, and the parsers of typed flag values: one definition
//! each, so `--dtype half` or `--backend CPU` mean the same to every subcommand. The names
//! themselves come from the library (`Backend`, `DType` and `SamplerKind` parse their own);
//! clap reports a parser's error as `invalid value 'X' for '--flag <V>': <message>`.

use std::path::Path;

use anyhow::anyhow;
use sd_wgpu::models::Tiling;
use sd_wgpu::schedulers::SamplerKind;
use sd_wgpu::{Backend, DType};

/// Where and in which precision the networks run.
#[derive(clap::Args)]
pub struct DeviceArgs {
    /// auto, gpu or cpu (default: $SD_WGPU_BACKEND, else auto: a hardware GPU if there is
    /// one, else the CPU; a software adapter such as llvmpipe only with gpu).
    #[arg(long, value_name = "auto|gpu|cpu", value_parser = backend)]
    pub backend: Option<Backend>,
    /// UNet and text-encoder precision: f16 (also fp16, half) or f32 (default: f16 on a GPU
    /// with shader f16, else f32).
    #[arg(long, value_name = "f16|f32", value_parser = dtype)]
    pub dtype: Option<DType>,
}

impl DeviceArgs {
    /// `--backend`, else `$SD_WGPU_BACKEND`, else auto.
    pub fn backend(&self) -> anyhow::Result<Backend> {
        Ok(match self.backend {
            Some(b) => b,
            None => Backend::from_env()?,
        })
    }
}

/// `--seed`: a seed, or A1111's `-1` for a random one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seed {
    Random,
    Fixed(u64),
}

pub fn seed(s: &str) -> Result<Seed, String> {
    match s.trim() {
        "-1" => Ok(Seed::Random),
        t => t
            .parse()
            .map(Seed::Fixed)
            .map_err(|_| format!("expected a seed from 0 to {}, or -1 for a random one", u64::MAX)),
    }
}

pub fn backend(s: &str) -> Result<Backend, String> {
    s.parse().map_err(|_| "expected auto, gpu or cpu".to_string())
}

pub fn dtype(s: &str) -> Result<DType, String> {
    s.to_ascii_lowercase()
        .parse()
        .map_err(|_| "expected f16 (fp16, half) or f32 (fp32)".to_string())
}

/// `--lora FILE[:WEIGHT]`.
pub fn lora(s: &str) -> Result<sd_wgpu::lora::LoraSpec, String> {
    sd_wgpu::lora::parse_lora_arg(s)
}

pub fn tiling(s: &str) -> Result<Tiling, String> {
    match s.to_ascii_lowercase().as_str() {
        "auto" => Ok(Tiling::Auto),
        "on" => Ok(Tiling::On),
        "off" => Ok(Tiling::Off),
        _ => Err("expected auto, on or off".into()),
    }
}

pub fn sampler(s: &str) -> Result<SamplerKind, String> {
    s.parse().map_err(|e| match e {
        sd_wgpu::Error::InvalidArgument { msg, .. } => {
            format!("{msg} (`sd-wgpu samplers` lists every name)")
        }
        e => e.to_string(),
    })
}

/// Refuses a path that does not exist, naming the flag that gave it.
pub fn must_exist(flag: &str, path: &Path) -> anyhow::Result<()> {
    match path.try_exists() {
        Ok(true) => Ok(()),
        Ok(false) => Err(anyhow!(
            "invalid argument {flag}: {} does not exist",
            path.display()
        )),
        Err(e) => Err(anyhow!(
            "invalid argument {flag}: cannot access {}: {e}",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds() {
        assert_eq!(seed("-1"), Ok(Seed::Random));
        assert_eq!(seed("0"), Ok(Seed::Fixed(0)));
        assert_eq!(seed("18446744073709551615"), Ok(Seed::Fixed(u64::MAX)));
        for bad in ["-2", "-0.5", "18446744073709551616", "x", ""] {
            assert!(seed(bad).unwrap_err().contains("-1 for a random one"), "{bad}");
        }
    }

    #[test]
    fn spellings() {
        for s in ["f16", "FP16", "half", "Float16"] {
            assert_eq!(dtype(s), Ok(DType::F16), "{s}");
        }
        assert_eq!(dtype("F32"), Ok(DType::F32));
        assert!(dtype("bf16").is_err());
        assert_eq!(backend("CPU"), Ok(Backend::Cpu));
        assert_eq!(tiling("Off"), Ok(Tiling::Off));
        assert_eq!(sampler("Euler a"), Ok(SamplerKind::EulerAncestral));
        assert!(sampler("dpm3").unwrap_err().contains("sd-wgpu samplers"));
    }
}
