//! The demo model built into the binary (`assets/demo-model`, trained by
//! `tools/demo/train.py`), so `sd-wgpu txt2img` works with no download.
//!
//! The files are compiled in as bytes and written out once, as an ordinary
//! diffusers folder, to a cache directory; the pipeline then loads that folder
//! through the same code as any other checkpoint (no special path for the demo
//! model, so it exercises what SD 1.5 uses). The folder name carries a hash of
//! the contents, so a new build never reads an older build's files; it is
//! written under a temporary name and renamed, so a crash or a concurrent
//! process never leaves a half-written model behind; and it is checked
//! byte for byte against the embedded copy at every use (about 20 MB: a few
//! milliseconds), so a damaged cache is rewritten instead of loaded.
//! Temporary folders a killed process left behind (`.demo-model-*.partial`,
//! `.stale`) are removed by the next use once they are
//! [`STALE_AFTER`](super::atomic::STALE_AFTER) old.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::atomic::remove_stale;
use super::request::hex_prefix;
use crate::{Error, Result};

/// One file of the embedded model: its path inside the diffusers folder.
pub struct EmbeddedFile {
    pub path: &'static str,
    pub bytes: &'static [u8],
}

macro_rules! demo_files {
    ($($path:literal),* $(,)?) => {
        &[$(EmbeddedFile {
            path: $path,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/demo-model/", $path)),
        }),*]
    };
}

/// Every file of `assets/demo-model` (a test checks that none is missing).
pub const DEMO_MODEL_FILES: &[EmbeddedFile] = demo_files![
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
];

/// The name the demo model goes by in A1111 metadata and in messages.
pub const DEMO_MODEL_NAME: &str = "sd-wgpu-demo";

/// The cache directory: `$SD_WGPU_CACHE`, else `$XDG_CACHE_HOME/sd-wgpu`,
/// else `~/.cache/sd-wgpu`, else `sd-wgpu` in the system temporary directory.
pub fn default_cache_dir() -> PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("SD_WGPU_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("sd-wgpu")))
        .or_else(|| env("HOME").map(|d| d.join(".cache").join("sd-wgpu")))
        .unwrap_or_else(|| std::env::temp_dir().join("sd-wgpu"))
}

/// The demo model as a diffusers folder under `cache_dir`, written there
/// first if it is missing or differs from the embedded copy.
pub fn demo_model_dir(cache_dir: &Path) -> Result<PathBuf> {
    let dir = cache_dir.join(format!("demo-model-{}", content_hash()));
    remove_stale(cache_dir, is_our_temporary);
    if matches_embedded(&dir) {
        return Ok(dir);
    }
    std::fs::create_dir_all(cache_dir)
        .map_err(|e| Error::io(format!("creating the cache directory {}", cache_dir.display()), e))?;
    let tmp = cache_dir.join(format!(
        ".demo-model-{}-{}.partial",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let written = write_all(&tmp).and_then(|()| replace_dir(&tmp, &dir));
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written?;
    Ok(dir)
}

/// The temporary folders of [`demo_model_dir`] and [`replace_dir`]:
/// `.demo-model-<pid>-<nanos>.partial` and `.stale`.
fn is_our_temporary(name: &str) -> bool {
    name.strip_prefix(".demo-model-")
        .and_then(|r| r.strip_suffix(".partial").or_else(|| r.strip_suffix(".stale")))
        .and_then(|r| r.split_once('-'))
        .is_some_and(|(pid, nanos)| {
            [pid, nanos]
                .iter()
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// Hex prefix of the SHA-256 over every file's path and bytes.
fn content_hash() -> String {
    let mut h = Sha256::new();
    for f in DEMO_MODEL_FILES {
        h.update((f.path.len() as u64).to_le_bytes());
        h.update(f.path.as_bytes());
        h.update((f.bytes.len() as u64).to_le_bytes());
        h.update(f.bytes);
    }
    hex_prefix(&h.finalize(), 12)
}

/// True when every embedded file is in `dir` with exactly its bytes.
fn matches_embedded(dir: &Path) -> bool {
    DEMO_MODEL_FILES.iter().all(|f| {
        let p = dir.join(f.path);
        std::fs::metadata(&p).is_ok_and(|m| m.len() == f.bytes.len() as u64)
            && std::fs::read(&p).is_ok_and(|b| b == f.bytes)
    })
}

fn write_all(tmp: &Path) -> Result<()> {
    for f in DEMO_MODEL_FILES {
        let p = tmp.join(f.path);
        let parent = p.parent().unwrap_or(tmp);
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        std::fs::write(&p, f.bytes).map_err(|e| Error::io(format!("writing {}", p.display()), e))?;
    }
    Ok(())
}

/// Moves the finished `tmp` folder to `dir`. Another process may have won the
/// race (then its identical copy is kept), or `dir` may be a damaged copy
/// (then it is moved aside and removed).
fn replace_dir(tmp: &Path, dir: &Path) -> Result<()> {
    if std::fs::rename(tmp, dir).is_ok() {
        return Ok(());
    }
    if matches_embedded(dir) {
        let _ = std::fs::remove_dir_all(tmp);
        return Ok(());
    }
    if dir.exists() {
        let stale = tmp.with_extension("stale");
        std::fs::rename(dir, &stale).map_err(|e| Error::io(format!("replacing {}", dir.display()), e))?;
        let _ = std::fs::remove_dir_all(&stale);
    }
    std::fs::rename(tmp, dir).map_err(|e| Error::io(format!("moving the demo model to {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sdw-embedded-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn every_asset_file_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo-model");
        let mut on_disk = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    on_disk.push(
                        p.strip_prefix(&root)
                            .unwrap()
                            .to_string_lossy()
                            .replace('\\', "/"),
                    );
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = DEMO_MODEL_FILES.iter().map(|f| f.path.to_string()).collect();
        embedded.sort();
        assert_eq!(
            embedded, on_disk,
            "DEMO_MODEL_FILES must list every file of assets/demo-model"
        );
    }

    #[test]
    fn written_once_and_repaired_when_damaged() {
        let cache = scratch("cache");
        let dir = demo_model_dir(&cache).unwrap();
        assert!(matches_embedded(&dir));
        let unet = dir.join("unet/diffusion_pytorch_model.safetensors");
        let before = std::fs::metadata(&unet).unwrap().modified().unwrap();
        assert_eq!(
            demo_model_dir(&cache).unwrap(),
            dir,
            "same folder on the second call"
        );
        assert_eq!(
            std::fs::metadata(&unet).unwrap().modified().unwrap(),
            before,
            "not rewritten"
        );

        // A flipped byte (same length) and a truncated file are both caught.
        let mut bytes = std::fs::read(&unet).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&unet, &bytes).unwrap();
        std::fs::write(dir.join("vae/config.json"), b"{").unwrap();
        assert!(!matches_embedded(&dir));
        assert_eq!(demo_model_dir(&cache).unwrap(), dir);
        assert!(matches_embedded(&dir), "damaged copy rewritten");
        let leftovers: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with('.'))
            .collect();
        assert!(
            leftovers.is_empty(),
            "temporary folders left behind: {leftovers:?}"
        );
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn stale_temporary_folders_are_removed_and_nothing_else() {
        use crate::pipeline::atomic::STALE_AFTER;
        let cache = scratch("stale");
        let old = std::time::SystemTime::now() - STALE_AFTER - std::time::Duration::from_secs(60);
        let victim = cache.join("victim");
        let names = [
            (".demo-model-12-345.partial", old, true),
            (".demo-model-12-346.stale", old, true),
            (".demo-model-12-347.partial", std::time::SystemTime::now(), false), // being written
            (".demo-model-x.partial", old, false),
            ("demo-model-0123456789ab", old, false),
        ];
        for (name, mtime, _) in names {
            std::fs::create_dir_all(cache.join(name).join("unet")).unwrap();
            std::fs::File::open(cache.join(name))
                .unwrap()
                .set_modified(mtime)
                .unwrap();
        }
        std::fs::create_dir_all(&victim).unwrap();
        std::fs::write(victim.join("keep"), b"x").unwrap();
        let link = cache.join(".demo-model-1-2.partial");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        crate::pipeline::atomic::tests::age_link(&link);
        demo_model_dir(&cache).unwrap();
        for (name, _, removed) in names {
            assert_eq!(!cache.join(name).exists(), removed, "{name}");
        }
        assert!(victim.join("keep").exists(), "a link is never followed");
        assert!(std::fs::symlink_metadata(&link).is_ok(), "nor removed");
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn unwritable_cache_is_an_error_naming_it() {
        let cache = scratch("blocked");
        std::fs::write(&cache, b"a file, not a folder").unwrap();
        let e = demo_model_dir(&cache).unwrap_err().to_string();
        assert!(e.contains(&cache.display().to_string()), "{e}");
        std::fs::remove_file(&cache).unwrap();
    }
}
