//! Writing images: PNG with the generation parameters in A1111's
//! `parameters` text chunk, written to a temporary file and moved into
//! place, never replacing an existing file unless asked to.
//!
//! Naming rule ([`Naming`]): `--output out.png` names the single image; with
//! several images they are `out-0.png`, `out-1.png`, ... (index in the run).
//! Without `--output`, images are `sd-wgpu-<seed>.png` in the current
//! directory. `--output-dir DIR` numbers them as A1111 does, `00001-<seed>.png`,
//! on from the highest `NNNNN-*.png` already there. [`Outputs::plan`] checks
//! every target before any work: the folder exists and takes new files, no
//! name is too long, and nothing is in the way (a dangling symbolic link
//! counts) unless `--overwrite`.
//!
//! Each file is written through a temporary and moved into place without
//! ever following a link someone planted (see `atomic`); temporaries a
//! killed run left behind are removed by a later run writing to the same
//! folder.

use std::path::{Path, PathBuf};

use super::atomic::{dir_of, is_our_temporary, place, remove_stale, temporary};
use super::image_io::RgbImage;
use crate::{Error, Result};

/// The longest file name (bytes) Linux and macOS file systems take.
pub const NAME_MAX: usize = 255;

/// How the images of a run are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Naming {
    /// `--output FILE.png`: the file for a single image, `FILE-<i>.png` for
    /// image `i` of several.
    File(PathBuf),
    /// No `--output`: `sd-wgpu-<seed>.png` in the current directory.
    Seed,
    /// `--output-dir DIR`: `DIR/00001-<seed>.png`, numbered on from the
    /// highest `NNNNN-*.png` in `DIR`.
    Numbered(PathBuf),
}

/// The target files of one run, checked before any work starts.
#[derive(Debug)]
pub struct Outputs {
    naming: Naming,
    /// Images in the run.
    count: usize,
    overwrite: bool,
    /// `Naming::Numbered`: the number the next image tries first.
    next: u64,
}

impl Outputs {
    /// Checks every target of a run whose image `i` has seed `seeds[i]`:
    /// the extension, the folder (exists, takes a new file: a temporary is
    /// created and removed there), each name's length, and that nothing is in
    /// the way unless `overwrite`. Stale temporaries of ours in the folder
    /// are removed first.
    pub fn plan(naming: Naming, seeds: &[u64], overwrite: bool) -> Result<Outputs> {
        let mut outputs = Outputs {
            naming,
            count: seeds.len(),
            overwrite,
            next: 1,
        };
        if let Naming::File(p) = &outputs.naming {
            let ext_ok = p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
            if !ext_ok {
                return Err(Error::invalid(
                    "--output",
                    format!("{} must end in .png", p.display()),
                ));
            }
        }
        let dir = outputs.dir();
        if !dir.is_dir() {
            let what = if dir.exists() {
                "is not a directory"
            } else {
                "does not exist"
            };
            return Err(outputs.refuse(&dir, what));
        }
        remove_stale(&dir, is_our_temporary);
        if let Err(e) = temporary(&dir) {
            let msg = format!("is not writable (creating a file there: {e})");
            return Err(match outputs.naming {
                Naming::Seed => Error::bad_file(
                    std::env::current_dir().unwrap_or(dir),
                    format!("the current directory, where images go without --output or --output-dir, {msg}"),
                ),
                _ => outputs.refuse(&dir, &msg),
            });
        }
        match &outputs.naming {
            Naming::Numbered(d) => outputs.next = highest_number(d)? + 1,
            _ => {
                for (i, &seed) in seeds.iter().enumerate() {
                    outputs.check_target(&outputs.path(i, seed))?;
                }
            }
        }
        Ok(outputs)
    }

    /// The file of image `i` (seed `seed`) for `File` and `Seed` naming; for
    /// `Numbered`, the name it tries first.
    pub fn path(&self, i: usize, seed: u64) -> PathBuf {
        match &self.naming {
            Naming::File(p) if self.count == 1 => p.clone(),
            Naming::File(p) => {
                let stem = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let ext = p
                    .extension()
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "png".into());
                p.with_file_name(format!("{stem}-{i}.{ext}"))
            }
            Naming::Seed => PathBuf::from(format!("sd-wgpu-{seed}.png")),
            Naming::Numbered(d) => d.join(format!("{:05}-{seed}.png", self.next)),
        }
    }

    /// Writes image `i`'s PNG bytes and returns the file's path. `Numbered`
    /// names take the next free number, so that a file that appeared
    /// meanwhile is never replaced; the other namings refuse then.
    pub fn write(&mut self, i: usize, seed: u64, png: &[u8]) -> Result<PathBuf> {
        loop {
            let path = self.path(i, seed);
            let numbered = matches!(self.naming, Naming::Numbered(_));
            if numbered {
                self.next += 1;
            }
            if place(&path, png, self.overwrite)? {
                return Ok(path);
            }
            if !numbered {
                return Err(self.refuse(&path, "appeared while generating; not overwritten"));
            }
        }
    }

    /// The folder the images go to.
    fn dir(&self) -> PathBuf {
        match &self.naming {
            Naming::File(p) => dir_of(p).to_path_buf(),
            Naming::Seed => PathBuf::from("."),
            Naming::Numbered(d) => d.clone(),
        }
    }

    /// `path` is a name the file system takes, and free (or `overwrite`).
    fn check_target(&self, path: &Path) -> Result<()> {
        let name_len = path.file_name().map_or(0, |n| n.as_encoded_bytes().len());
        if name_len > NAME_MAX {
            return Err(self.refuse(
                path,
                &format!("has a {name_len}-byte file name; file systems take at most {NAME_MAX}"),
            ));
        }
        // symlink_metadata: a link is something in the way even when it
        // points nowhere (`exists()` would follow it and say no).
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return Ok(());
        };
        if meta.is_dir() {
            return Err(self.refuse(path, "is a directory"));
        }
        if meta.file_type().is_symlink() && !path.exists() {
            let target = std::fs::read_link(path).unwrap_or_default();
            return Err(self.refuse(
                path,
                &format!(
                    "is a symbolic link to {}, which does not exist; links are never followed \
                     (remove it or choose another name)",
                    target.display()
                ),
            ));
        }
        if !self.overwrite {
            let other = match self.naming {
                Naming::Seed => "choose another name with --output or --output-dir",
                _ => "choose another name",
            };
            return Err(self.refuse(path, &format!("already exists ({other} or pass --overwrite)")));
        }
        Ok(())
    }

    /// "`path` `msg`", naming the flag the user passed, if any.
    fn refuse(&self, path: &Path, msg: &str) -> Error {
        let flag = match self.naming {
            Naming::File(_) => "--output",
            Naming::Numbered(_) => "--output-dir",
            Naming::Seed => return Error::bad_file(path, msg),
        };
        Error::invalid(flag, format!("{} {msg}", path.display()))
    }
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

/// The highest `N` of the `N-*.png` files in `dir` (`N` at least 5 digits,
/// A1111's numbering), 0 when there is none.
fn highest_number(dir: &Path) -> Result<u64> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::invalid("--output-dir", format!("cannot list {}: {e}", dir.display())))?;
    Ok(entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (number, rest) = name.split_once('-')?;
            let png = rest.len() > 4 && rest[rest.len() - 4..].eq_ignore_ascii_case(".png");
            let digits = number.len() >= 5 && number.bytes().all(|b| b.is_ascii_digit());
            if png && digits {
                number.parse::<u64>().ok()
            } else {
                None
            }
        })
        .max()
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sdw-out-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn names(outputs: &Outputs, seeds: &[u64]) -> Vec<PathBuf> {
        seeds
            .iter()
            .enumerate()
            .map(|(i, &s)| outputs.path(i, s))
            .collect()
    }

    #[test]
    fn naming_rule() {
        let d = tmpdir("names");
        let file = |name: &str| Naming::File(d.join(name));
        let one = Outputs::plan(file("cat.png"), &[7], false).unwrap();
        assert_eq!(names(&one, &[7]), vec![d.join("cat.png")]);
        let many = Outputs::plan(file("cat.png"), &[7, 8], false).unwrap();
        assert_eq!(
            names(&many, &[7, 8]),
            vec![d.join("cat-0.png"), d.join("cat-1.png")]
        );
        let default = Outputs::plan(Naming::Seed, &[42], false).unwrap();
        assert_eq!(names(&default, &[42]), vec![PathBuf::from("sd-wgpu-42.png")]);
        std::fs::write(d.join("cat-1.png"), b"x").unwrap();
        let e = Outputs::plan(file("cat.png"), &[7, 8], false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--output") && e.contains("cat-1.png") && e.contains("--overwrite"),
            "{e}"
        );
        assert!(Outputs::plan(file("cat.png"), &[7, 8], true).is_ok());
        assert!(Outputs::plan(file("cat.jpg"), &[7], false).is_err());
        let e = Outputs::plan(file("nodir/cat.png"), &[7], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nodir") && e.contains("does not exist"), "{e}");
        // A file that appears after the check is not replaced.
        let mut late = Outputs::plan(file("late.png"), &[7], false).unwrap();
        std::fs::write(d.join("late.png"), b"theirs").unwrap();
        let e = late.write(0, 7, b"png").unwrap_err().to_string();
        assert!(
            e.contains("--output") && e.contains("late.png appeared while generating"),
            "{e}"
        );
        assert_eq!(std::fs::read(d.join("late.png")).unwrap(), b"theirs");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn refused_before_any_work() {
        let d = tmpdir("refused");
        // A dangling link is in the way, and named as such, even with --overwrite.
        std::os::unix::fs::symlink(d.join("nowhere"), d.join("ghost.png")).unwrap();
        for overwrite in [false, true] {
            let e = Outputs::plan(Naming::File(d.join("ghost.png")), &[1], overwrite)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("ghost.png") && e.contains("symbolic link") && e.contains("nowhere"),
                "{e}"
            );
            assert!(!e.contains("appeared"), "{e}");
        }
        // A name the file system would refuse.
        let long = format!("{}.png", "n".repeat(252));
        let e = Outputs::plan(Naming::File(d.join(&long)), &[1], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("256-byte file name") && e.contains("--output"), "{e}");
        let fits = format!("{}.png", "n".repeat(251));
        assert!(Outputs::plan(Naming::File(d.join(&fits)), &[1], false).is_ok());
        // A "folder" that is a file, and one that takes no new file (root can write in any
        // folder whatever its mode, /proc refuses it too).
        std::fs::write(d.join("plain"), b"x").unwrap();
        let e = Outputs::plan(Naming::Numbered(d.join("plain")), &[1], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--output-dir") && e.contains("not a directory"), "{e}");
        let e = Outputs::plan(Naming::File(PathBuf::from("/proc/x.png")), &[1], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--output: /proc is not writable"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn png_carries_parameters() {
        let d = tmpdir("png");
        let img = RgbImage {
            width: 2,
            height: 2,
            data: vec![0.5; 12],
        };
        let text = "a cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, Seed: 1";
        let bytes = encode_png(&img, text).unwrap();
        let p = d.join("x.png");
        std::fs::write(&p, &bytes).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&p).unwrap()));
        let reader = dec.read_info().unwrap();
        let chunk = &reader.info().uncompressed_latin1_text[0];
        assert_eq!(
            (chunk.keyword.as_str(), chunk.text.as_str()),
            ("parameters", text)
        );
        let utf = encode_png(&img, "猫").unwrap();
        let reader = png::Decoder::new(std::io::Cursor::new(utf)).read_info().unwrap();
        assert_eq!(reader.info().utf8_text[0].get_text().unwrap(), "猫");

        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn numbered_names_go_on_from_the_highest_and_skip_taken_ones() {
        let d = tmpdir("numbered");
        for name in [
            "00003-1.png",
            "00007-9-a cat.png",
            "123-4.png",
            "00009.png",
            "x-1.png",
        ] {
            std::fs::write(d.join(name), b"x").unwrap();
        }
        let mut out = Outputs::plan(Naming::Numbered(d.clone()), &[5, 6], false).unwrap();
        // A file that appears under the next name is skipped, not replaced.
        std::fs::write(d.join("00008-5.png"), b"theirs").unwrap();
        assert_eq!(out.write(0, 5, b"png").unwrap(), d.join("00009-5.png"));
        assert_eq!(out.write(1, 6, b"png").unwrap(), d.join("00010-6.png"));
        assert_eq!(std::fs::read(d.join("00008-5.png")).unwrap(), b"theirs");
        let empty = tmpdir("numbered-empty");
        let out = Outputs::plan(Naming::Numbered(empty.clone()), &[42], false).unwrap();
        assert_eq!(out.path(0, 42), empty.join("00001-42.png"));
        std::fs::remove_dir_all(&d).unwrap();
        std::fs::remove_dir_all(&empty).unwrap();
    }
}
