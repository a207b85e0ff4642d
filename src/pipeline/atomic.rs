//! Writing a file in a folder others may write to: the bytes go to a
//! temporary created with `O_CREAT | O_EXCL` (which never follows a link
//! someone planted) under an unpredictable name `.sd-wgpu-XXXXXXXXXX.tmp`,
//! then move into place without replacing a file that appeared meanwhile
//! (rename without replace, or a hard link). A failure leaves no partial
//! file; a kill -9 may leave a temporary, which [`remove_stale`] removes on
//! a later run once it is [`STALE_AFTER`] old.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::{Error, Result};

/// Age after which a temporary of our own naming counts as left behind: a
/// temporary lives for the milliseconds it takes to write one PNG.
pub const STALE_AFTER: Duration = Duration::from_secs(10 * 60);

const TMP_PREFIX: &str = ".sd-wgpu-";
const TMP_RANDOM: usize = 10;
const TMP_SUFFIX: &str = ".tmp";

/// Writes `bytes` to `path` through a new temporary in the same directory;
/// a failure leaves no partial file. Returns false (and writes nothing)
/// when `path` exists and not `overwrite`; with `overwrite` a symbolic link
/// at `path` is replaced, never followed.
pub fn place(path: &Path, bytes: &[u8], overwrite: bool) -> Result<bool> {
    let io = |e| Error::io(format!("writing {}", path.display()), e);
    let mut tmp = temporary(dir_of(path)).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    // Dropping the temporary (also inside a PersistError) removes it.
    let placed = if overwrite {
        tmp.persist(path)
    } else {
        tmp.persist_noclobber(path)
    };
    match placed {
        Ok(_) => Ok(true),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        // File systems with neither hard links nor rename-without-replace:
        // check, then rename.
        Err(e) if !overwrite && std::fs::symlink_metadata(path).is_err() => {
            e.file.persist(path).map(|_| true).map_err(|e| io(e.error))
        }
        Err(e) => Err(io(e.error)),
    }
}

/// A new, empty temporary `.sd-wgpu-XXXXXXXXXX.tmp` in `dir`, removed when dropped.
pub fn temporary(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .rand_bytes(TMP_RANDOM)
        .suffix(TMP_SUFFIX)
        .make_in(dir, create_exclusive)
}

/// Creates `path`, failing if anything is there, a symbolic link included
/// (`O_EXCL`); mode 0666 less the umask, as any new file.
fn create_exclusive(path: &Path) -> std::io::Result<std::fs::File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

/// The folder `path` is in (`.` for a bare file name).
pub fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Our temporaries: `.sd-wgpu-XXXXXXXXXX.tmp`, and the `.<name>.png.<pid>.tmp`
/// of earlier builds (kill -9 left those behind too).
pub fn is_our_temporary(name: &str) -> bool {
    let current = name
        .strip_prefix(TMP_PREFIX)
        .and_then(|r| r.strip_suffix(TMP_SUFFIX))
        .is_some_and(|r| r.len() == TMP_RANDOM && r.bytes().all(|b| b.is_ascii_alphanumeric()));
    let old = name
        .strip_prefix('.')
        .and_then(|r| r.strip_suffix(".tmp"))
        .and_then(|r| r.rsplit_once('.'))
        .is_some_and(|(stem, pid)| {
            stem.len() > 4
                && stem[stem.len() - 4..].eq_ignore_ascii_case(".png")
                && !pid.is_empty()
                && pid.bytes().all(|b| b.is_ascii_digit())
        });
    current || old
}

/// Removes the entries of `dir` whose name `ours` accepts and that were last
/// modified [`STALE_AFTER`] ago or more: plain files and folders only,
/// never a symbolic link (nor anything through one). Best effort: what cannot
/// be removed stays. Returns how many were removed.
pub fn remove_stale(dir: &Path, ours: fn(&str) -> bool) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_str().is_some_and(ours) {
            continue;
        }
        let path = entry.path();
        // symlink_metadata describes the entry itself, not what a link points at.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let age = meta.modified().ok().and_then(|m| now.duration_since(m).ok());
        if age.is_none_or(|a| a < STALE_AFTER) {
            continue;
        }
        let gone = if meta.file_type().is_file() {
            std::fs::remove_file(&path)
        } else if meta.file_type().is_dir() {
            // remove_dir_all never follows links inside the folder.
            std::fs::remove_dir_all(&path)
        } else {
            continue;
        };
        removed += usize::from(gone.is_ok());
    }
    removed
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;

    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sdw-atomic-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn age(path: &Path, secs: u64) {
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(secs))
            .unwrap();
    }

    /// Ages a symbolic link itself (std has no `lutimes`).
    pub(crate) fn age_link(link: &Path) {
        let touched = std::process::Command::new("touch")
            .args(["-h", "-d", "2 hours ago"])
            .arg(link)
            .status()
            .unwrap();
        assert!(touched.success());
    }

    #[test]
    fn never_clobbers_nor_follows_a_link_and_leaves_no_temporary() {
        let d = tmpdir("place");
        let bytes = b"new bytes".to_vec();
        let p = d.join("x.png");
        assert!(place(&p, &bytes, false).unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), bytes);
        std::fs::write(&p, b"replaced?").unwrap();
        assert!(!place(&p, &bytes, false).unwrap(), "never clobbers");
        assert_eq!(std::fs::read(&p).unwrap(), b"replaced?");
        assert!(place(&p, &bytes, true).unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), bytes);
        let leftovers: Vec<_> = std::fs::read_dir(&d).unwrap().filter_map(|e| e.ok()).collect();
        assert_eq!(leftovers.len(), 1, "temporary files left behind");

        // --overwrite replaces a link at the target itself, never its target.
        let victim = d.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, d.join("link.png")).unwrap();
        assert!(!place(&d.join("link.png"), &bytes, false).unwrap());
        assert!(place(&d.join("link.png"), &bytes, true).unwrap());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!std::fs::symlink_metadata(d.join("link.png"))
            .unwrap()
            .file_type()
            .is_symlink());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn exclusive_creation_never_follows_a_link() {
        let d = tmpdir("excl");
        let victim = d.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, d.join("live")).unwrap();
        std::os::unix::fs::symlink(d.join("nowhere"), d.join("dangling")).unwrap();
        for name in ["live", "dangling"] {
            let e = create_exclusive(&d.join(name)).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{name}");
        }
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(
            !d.join("nowhere").exists(),
            "the dangling link's target was not created"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stale_temporaries_of_ours_are_removed_and_nothing_else() {
        let d = tmpdir("stale");
        let victim = d.join("victim.tmp");
        std::fs::write(&victim, b"precious").unwrap();
        let files = [
            (".sd-wgpu-AbCdE12345.tmp", 3600, true),
            (".cat.png.4242.tmp", 3600, true),
            (".sd-wgpu-AbCdE12346.tmp", 10, false), // fresh: maybe another run's
            (".sd-wgpu-short.tmp", 3600, false),
            (".other.tmp", 3600, false),
            ("cat.png", 3600, false),
        ];
        for (name, secs, _) in files {
            std::fs::write(d.join(name), b"x").unwrap();
            age(&d.join(name), secs);
        }
        age(&victim, 3600);
        let link = d.join(".sd-wgpu-LiNk012345.tmp");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        age_link(&link);
        assert_eq!(remove_stale(&d, is_our_temporary), 2);
        for (name, _, removed) in files {
            assert_eq!(!d.join(name).exists(), removed, "{name}");
        }
        assert!(
            std::fs::symlink_metadata(&link).is_ok(),
            "an old link of our naming stays"
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
