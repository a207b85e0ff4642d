//! What one generation asks for: [`Request`], and the textual-inversion
//! embeddings it may use ([`TextualInversion`]).
//!
//! Errors name each parameter as the command line spells it (`--steps`,
//! `--cfg-scale`...): the fields of [`Request`] are the flags of
//! `sd-wgpu txt2img` one for one.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::checkpoint::bytes::FileBytes;
use crate::checkpoint::Embedding;
use crate::schedulers::{Img2ImgStart, SamplerKind};
use crate::{Error, Result};

/// The largest width or height accepted, in pixels. SD 1.x is trained at
/// 512; beyond 4096 the UNet's attention alone runs for hours.
pub const MAX_SIDE: usize = 4096;

/// The largest classifier-free guidance scale accepted. A1111's slider stops at 30 and images
/// saturate well before; 100 leaves room to experiment while refusing typos such as `1e30`,
/// which make the guided prediction overflow f32 and the image NaN.
pub const MAX_CFG_SCALE: f32 = 100.0;

/// One txt2img or img2img generation.
#[derive(Debug, Clone)]
pub struct Request {
    /// A1111 prompt syntax: `(word:1.2)`, `[word]`, `BREAK`; any length (75-token chunks).
    pub prompt: String,
    /// What to steer away from; empty means the encoding of `""`.
    pub negative_prompt: String,
    /// Inference steps (img2img runs `steps * strength` of them).
    pub steps: usize,
    /// Classifier-free guidance scale, 0 to [`MAX_CFG_SCALE`]; 1 skips the unconditional pass.
    pub cfg_scale: f32,
    /// `None`: the sampler the model's scheduler config names (PNDM for SD 1.5).
    pub sampler: Option<SamplerKind>,
    /// Image `i` of the batch uses `seed + i`.
    pub seed: u64,
    /// Pixels, a multiple of 8. `None`: the model's native size (txt2img) or the
    /// input image's size rounded down to a multiple of 8 (img2img).
    pub width: Option<usize>,
    pub height: Option<usize>,
    /// Images generated one after the other, with seeds `seed, seed + 1, ...`.
    pub batch: usize,
    /// A1111's "Clip skip": 1 uses the text encoder's last layer, 2 the one before...
    pub clip_skip: usize,
    /// img2img: how much of the schedule runs (0: none, 1: all, from pure noise).
    pub strength: f64,
    /// Textual-inversion embeddings whose trigger words the prompts may use.
    pub embeddings: Vec<TextualInversion>,
}

impl Default for Request {
    /// diffusers' and A1111's usual settings: 25 steps, CFG 7.5, the model's
    /// sampler and size, seed 0, strength 0.75.
    fn default() -> Self {
        Request {
            prompt: String::new(),
            negative_prompt: String::new(),
            steps: 25,
            cfg_scale: 7.5,
            sampler: None,
            seed: 0,
            width: None,
            height: None,
            batch: 1,
            clip_skip: 1,
            strength: 0.75,
            embeddings: Vec::new(),
        }
    }
}

impl Request {
    pub fn new(prompt: impl Into<String>) -> Request {
        Request {
            prompt: prompt.into(),
            ..Request::default()
        }
    }

    /// The seed of image `i` of the batch (wrapping at 2^64).
    pub fn seed_of(&self, i: usize) -> u64 {
        self.seed.wrapping_add(i as u64)
    }

    /// The checks that need no model: counts, ranges, sizes. The pipeline adds
    /// the model's own limits (size multiple of its VAE factor, clip skip up to
    /// its layer count, steps up to its training timesteps).
    pub fn check(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(Error::invalid("--steps", "must be at least 1, found 0"));
        }
        if !(0.0..=MAX_CFG_SCALE).contains(&self.cfg_scale) {
            return Err(Error::invalid(
                "--cfg-scale",
                format!(
                    "must be a number from 0 to {MAX_CFG_SCALE} (A1111's slider stops at 30), found {}",
                    self.cfg_scale
                ),
            ));
        }
        if self.batch == 0 {
            return Err(Error::invalid("--batch", "must be at least 1, found 0"));
        }
        if self.clip_skip == 0 {
            return Err(Error::invalid(
                "--clip-skip",
                "must be at least 1 (1 = the last layer, as A1111 counts), found 0",
            ));
        }
        for (flag, side) in [("--width", self.width), ("--height", self.height)] {
            if let Some(s) = side {
                check_side(flag, s, 8)?;
            }
        }
        for (flag, text) in [
            ("--prompt", &self.prompt),
            ("--negative-prompt", &self.negative_prompt),
        ] {
            crate::text::prompt::parse(text).map_err(|e| match e {
                Error::InvalidArgument { msg, .. } => Error::invalid(flag, msg),
                e => e,
            })?;
        }
        Ok(())
    }

    /// The image size: `width` and `height` where given, else `default`, each side checked by
    /// [`check_side`]. A default side that fails is reported under `default_from` (what it came
    /// from: "the model's native size", an image file...), not under a flag nobody passed.
    pub fn size(
        &self,
        default: (usize, usize),
        default_from: &str,
        multiple: usize,
    ) -> Result<(usize, usize)> {
        let side = |flag: &str, what: &str, given: Option<usize>, default: usize| match given {
            Some(s) => check_side(flag, s, multiple).map(|()| s),
            None => check_side(flag, default, multiple)
                .map(|()| default)
                .map_err(|e| match e {
                    Error::InvalidArgument { msg, .. } => Error::invalid(
                        default_from,
                        format!("the {what} it gives {msg}; pass {flag} to choose one"),
                    ),
                    e => e,
                }),
        };
        Ok((
            side("--width", "width", self.width, default.0)?,
            side("--height", "height", self.height, default.1)?,
        ))
    }

    /// The img2img checks: [`Request::check`] and the strength range.
    pub fn check_img2img(&self) -> Result<Img2ImgStart> {
        self.check()?;
        Img2ImgStart::new(self.steps, self.strength).map_err(|_| {
            Error::invalid(
                "--strength",
                format!("must be between 0 and 1, found {}", self.strength),
            )
        })
    }
}

/// A side length in pixels: non-zero, at most [`MAX_SIDE`], a multiple of `multiple`.
pub fn check_side(flag: &str, side: usize, multiple: usize) -> Result<()> {
    if side == 0 || side > MAX_SIDE {
        return Err(Error::invalid(
            flag,
            format!("must be between {multiple} and {MAX_SIDE} pixels, found {side}"),
        ));
    }
    if !side.is_multiple_of(multiple) {
        // The nearest multiples below and above that are allowed sizes.
        let down = side / multiple * multiple;
        let near: Vec<String> = [down, down + multiple]
            .into_iter()
            .filter(|s| (multiple..=MAX_SIDE).contains(s))
            .map(|s| s.to_string())
            .collect();
        return Err(Error::invalid(
            flag,
            format!(
                "must be a multiple of {multiple}, found {side} (try {})",
                near.join(" or ")
            ),
        ));
    }
    Ok(())
}

/// A textual-inversion embedding with the hash A1111 records for it.
#[derive(Debug, Clone)]
pub struct TextualInversion {
    pub embedding: Embedding,
    /// First 12 hex digits of the file's SHA-256 (A1111's `TI hashes` entry).
    pub hash: String,
    /// The file it was read from, named in errors (`None`: built in memory).
    pub path: Option<PathBuf>,
}

impl TextualInversion {
    /// Reads an embedding file (any layout [`Embedding::load`] knows).
    pub fn load(path: impl AsRef<Path>) -> Result<TextualInversion> {
        let path = path.as_ref();
        let embedding = Embedding::load(path)?;
        let bytes = std::fs::read(path).map_err(|e| Error::io(path.display().to_string(), e))?;
        Ok(TextualInversion {
            embedding,
            hash: hex_prefix(&Sha256::digest(&bytes), 12),
            path: Some(path.to_path_buf()),
        })
    }

    /// [`TextualInversion::load`] for a file held in memory (e.g. built into the binary);
    /// `name` stands for the file in messages and gives stem-named layouts their trigger.
    pub fn from_bytes(name: &Path, bytes: Vec<u8>) -> Result<TextualInversion> {
        let hash = hex_prefix(&Sha256::digest(&bytes), 12);
        let embedding = Embedding::from_bytes(name, FileBytes::Owned(bytes))?;
        Ok(TextualInversion {
            embedding,
            hash,
            path: Some(name.to_path_buf()),
        })
    }

    /// Refuses vectors of another width than the text encoder's (`width`), naming the file.
    pub fn check_width(&self, width: usize) -> Result<()> {
        let e = &self.embedding;
        if e.width == width {
            return Ok(());
        }
        let name = match &self.path {
            Some(p) => format!("--embedding {}", p.display()),
            None => format!("embedding {:?}", e.trigger),
        };
        Err(Error::invalid(
            name,
            format!(
                "{:?} has vectors {} wide but the text encoder's are {width} \
                 (an embedding trained for another model family?)",
                e.trigger, e.width
            ),
        ))
    }
}

/// The first `n` hex digits of a digest.
pub(crate) fn hex_prefix(digest: &[u8], n: usize) -> String {
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..n].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(r: &Request) -> String {
        r.check().unwrap_err().to_string()
    }

    #[test]
    fn checks_name_the_flag() {
        let ok = Request::new("a cat");
        ok.check().unwrap();
        let e = err(&Request {
            steps: 0,
            ..ok.clone()
        });
        assert!(e.contains("--steps"), "{e}");
        let e = err(&Request {
            cfg_scale: -1.0,
            ..ok.clone()
        });
        assert!(e.contains("--cfg-scale") && e.contains("-1"), "{e}");
        for cfg in [f32::NAN, f32::INFINITY, 1e30, 100.5] {
            let e = err(&Request {
                cfg_scale: cfg,
                ..ok.clone()
            });
            assert!(e.contains("--cfg-scale") && e.contains("100"), "{cfg}: {e}");
        }
        Request {
            cfg_scale: MAX_CFG_SCALE,
            ..ok.clone()
        }
        .check()
        .unwrap();
        let e = err(&Request {
            batch: 0,
            ..ok.clone()
        });
        assert!(e.contains("--batch"), "{e}");
        let e = err(&Request {
            width: Some(500),
            ..ok.clone()
        });
        assert!(e.contains("--width") && e.contains("496 or 504"), "{e}");
        // Only allowed sizes are suggested, each once.
        for (side, try_) in [(7, "(try 8)"), (4095, "(try 4088 or 4096)"), (9, "(try 8 or 16)")] {
            let e = err(&Request {
                width: Some(side),
                ..ok.clone()
            });
            assert!(e.contains(try_), "{side}: {e}");
        }
        let e = err(&Request {
            height: Some(0),
            ..ok.clone()
        });
        assert!(e.contains("--height"), "{e}");
        let e = err(&Request {
            height: Some(8192),
            ..ok.clone()
        });
        assert!(e.contains("--height") && e.contains("4096"), "{e}");
        let e = err(&Request {
            clip_skip: 0,
            ..ok.clone()
        });
        assert!(e.contains("--clip-skip"), "{e}");
        let e = err(&Request {
            negative_prompt: "(ugly:1.2.3)".into(),
            ..ok.clone()
        });
        assert!(e.contains("--negative-prompt") && e.contains("1.2.3"), "{e}");
        let e = Request {
            strength: 1.5,
            ..ok.clone()
        }
        .check_img2img()
        .unwrap_err()
        .to_string();
        assert!(e.contains("--strength") && e.contains("1.5"), "{e}");
        let start = Request {
            strength: 0.01,
            steps: 20,
            ..ok
        }
        .check_img2img()
        .unwrap();
        assert!(start.raised_to_one && start.steps_run == 1);
    }

    #[test]
    fn default_sizes_name_where_they_came_from() {
        let r = Request::new("a cat");
        assert_eq!(
            r.size((512, 512), "the model's native size", 8).unwrap(),
            (512, 512)
        );
        let e = r
            .size((8192, 64), "big.png (8200x64 px)", 8)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("big.png")
                && e.contains("width")
                && e.contains("pass --width")
                && !e.contains("argument --width"),
            "{e}"
        );
        let given = Request {
            width: Some(64),
            height: Some(100),
            ..r
        };
        let e = given.size((8192, 8192), "big.png", 8).unwrap_err().to_string();
        assert!(e.contains("--height") && !e.contains("big.png"), "{e}");
    }

    #[test]
    fn embedding_width_errors_name_the_file() {
        let ti = TextualInversion {
            embedding: Embedding {
                trigger: "<cat>".into(),
                n: 1,
                width: 1024,
                vectors: vec![0.0; 1024],
            },
            hash: "0123456789ab".into(),
            path: Some("sd2-cat.pt".into()),
        };
        ti.check_width(1024).unwrap();
        let e = ti.check_width(768).unwrap_err().to_string();
        assert!(
            e.contains("--embedding sd2-cat.pt") && e.contains("1024") && e.contains("768"),
            "{e}"
        );
    }

    #[test]
    fn seeds_wrap() {
        let r = Request {
            seed: u64::MAX,
            ..Request::default()
        };
        assert_eq!((r.seed_of(0), r.seed_of(1)), (u64::MAX, 0));
    }
}
