//! Writing images: PNG with the generation parameters in A1111's
//! `parameters` text chunk, written to a temporary file and moved into
//! place, never replacing an existing file unless asked to.
//!
//! Naming rule: `--output out.png` names the single image; with a batch the
//! images are `out-0.png`, `out-1.png`, ... (index in the batch). Without
//! `--output`, images are `sd-wgpu-<seed>.png` in the current directory. If
//! any target exists the run stops before generating (`--overwrite` allows
//! replacing), and the final move refuses to clobber a file that appeared
//! meanwhile.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::image_io::RgbImage;
use crate::{Error, Result};

/// The target files of one run, checked before any work starts.
pub fn plan_outputs(output: Option<&Path>, seeds: &[u64], overwrite: bool) -> Result<Vec<PathBuf>> {
    let paths: Vec<PathBuf> = match output {
        Some(p) if seeds.len() == 1 => vec![p.to_path_buf()],
        Some(p) => {
            let stem = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let ext = p
                .extension()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_else(|| "png".into());
            (0..seeds.len())
                .map(|i| p.with_file_name(format!("{stem}-{i}.{ext}")))
                .collect()
        }
        None => seeds
            .iter()
            .map(|s| PathBuf::from(format!("sd-wgpu-{s}.png")))
            .collect(),
    };
    for p in &paths {
        let ext_ok = p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if !ext_ok {
            return Err(Error::invalid(
                "--output",
                format!("{} must end in .png", p.display()),
            ));
        }
        if !overwrite && p.exists() {
            return Err(Error::invalid(
                "--output",
                format!(
                    "{} already exists (choose another name or pass --overwrite)",
                    p.display()
                ),
            ));
        }
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                return Err(Error::invalid(
                    "--output",
                    format!("directory {} does not exist", dir.display()),
                ));
            }
        }
    }
    Ok(paths)
}

/// Encodes `img` as PNG with a `parameters` chunk (tEXt when the text is
/// Latin-1, else iTXt, as PIL does for A1111).
pub fn encode_png(img: &RgbImage, parameters: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, img.width as u32, img.height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let latin1 = parameters.chars().all(|c| (c as u32) < 256);
        let r = if latin1 {
            enc.add_text_chunk("parameters".into(), parameters.into())
        } else {
            enc.add_itxt_chunk("parameters".into(), parameters.into())
        };
        r.map_err(|e| Error::invalid("parameters", format!("cannot store in a PNG text chunk: {e}")))?;
        let mut w = enc
            .write_header()
            .map_err(|e| Error::invalid("png", e.to_string()))?;
        w.write_image_data(&img.to_rgb8())
            .map_err(|e| Error::invalid("png", e.to_string()))?;
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` through a temporary file in the same directory.
/// A failure leaves no partial file; an existing `path` is replaced only
/// when `overwrite`.
pub fn write_atomic(path: &Path, bytes: &[u8], overwrite: bool) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let io = |e| Error::io(path.display().to_string(), e);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        if overwrite {
            std::fs::rename(&tmp, path).map_err(io)
        } else {
            // A hard link fails if `path` exists: no silent clobbering.
            match std::fs::hard_link(&tmp, path) {
                Ok(()) => std::fs::remove_file(&tmp).map_err(io),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::invalid(
                    "--output",
                    format!("{} appeared while generating; not overwritten", path.display()),
                )),
                // File systems without hard links: check, then rename.
                Err(_) if !path.exists() => std::fs::rename(&tmp, path).map_err(io),
                Err(e) => Err(io(e)),
            }
        }
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sdw-out-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn naming_rule() {
        let d = tmpdir("names");
        let one = plan_outputs(Some(&d.join("cat.png")), &[7], false).unwrap();
        assert_eq!(one, vec![d.join("cat.png")]);
        let many = plan_outputs(Some(&d.join("cat.png")), &[7, 8], false).unwrap();
        assert_eq!(many, vec![d.join("cat-0.png"), d.join("cat-1.png")]);
        let default = plan_outputs(None, &[42], false).unwrap();
        assert_eq!(default, vec![PathBuf::from("sd-wgpu-42.png")]);
        std::fs::write(d.join("cat-1.png"), b"x").unwrap();
        let e = plan_outputs(Some(&d.join("cat.png")), &[7, 8], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cat-1.png") && e.contains("--overwrite"), "{e}");
        assert!(plan_outputs(Some(&d.join("cat.png")), &[7, 8], true).is_ok());
        assert!(plan_outputs(Some(&d.join("cat.jpg")), &[7], false).is_err());
        assert!(plan_outputs(Some(&d.join("nodir/cat.png")), &[7], false).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn png_carries_parameters_and_never_clobbers() {
        let d = tmpdir("png");
        let img = RgbImage {
            width: 2,
            height: 2,
            data: vec![0.5; 12],
        };
        let text = "a cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, Seed: 1";
        let bytes = encode_png(&img, text).unwrap();
        let p = d.join("x.png");
        write_atomic(&p, &bytes, false).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&p).unwrap()));
        let reader = dec.read_info().unwrap();
        let chunk = &reader.info().uncompressed_latin1_text[0];
        assert_eq!(
            (chunk.keyword.as_str(), chunk.text.as_str()),
            ("parameters", text)
        );
        let e = write_atomic(&p, &bytes, false).unwrap_err().to_string();
        assert!(e.contains("not overwritten"), "{e}");
        write_atomic(&p, &bytes, true).unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(&d).unwrap().filter_map(|e| e.ok()).collect();
        assert_eq!(leftovers.len(), 1, "temporary files left behind");
        let utf = encode_png(&img, "猫").unwrap();
        let reader = png::Decoder::new(std::io::Cursor::new(utf)).read_info().unwrap();
        assert_eq!(reader.info().utf8_text[0].get_text().unwrap(), "猫");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
