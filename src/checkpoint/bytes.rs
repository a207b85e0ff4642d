//! The bytes of a checkpoint file: memory-mapped from disk, or owned (tests and
//! the fuzz harness feed corrupted copies without touching the disk).

use std::ops::Deref;
use std::path::Path;

use memmap2::Mmap;

use crate::{Error, Result};

pub enum FileBytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl FileBytes {
    /// Maps `path` read-only.
    pub fn map(path: &Path) -> Result<FileBytes> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path.display().to_string(), e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(path.display().to_string(), e))?
            .len();
        if len == 0 {
            // Mapping an empty file fails on some systems; the parsers report it.
            return Ok(FileBytes::Owned(Vec::new()));
        }
        // SAFETY: the map is read-only and every access is bounds-checked against
        // its length; a file truncated underneath us while mapped is the usual
        // mmap caveat, accepted by every checkpoint loader.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path.display().to_string(), e))?;
        Ok(FileBytes::Mapped(mmap))
    }
}

impl Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Owned(v) => v,
        }
    }
}

impl AsRef<[u8]> for FileBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

const LFS_MAGIC: &[u8] = b"version https://git-lfs";

/// True for a git-lfs pointer file (what a clone without `git lfs` leaves).
pub fn is_lfs_pointer(bytes: &[u8]) -> bool {
    bytes.starts_with(LFS_MAGIC)
}

/// The hint appended to messages about files that turn out to be lfs pointers.
pub const LFS_HINT: &str =
    "this looks like a git-lfs pointer file, not the weights: run `git lfs pull` in the repository";

/// What a weights file is, from its first bytes (extensions are not trusted:
/// `.bin`, `.ckpt` and `.pt` are torch, but `.pt` files may be safetensors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A zip archive: `torch.save` since torch 1.6.
    TorchZip,
    /// The pre-1.6 torch format: a pickled magic number first.
    LegacyTorch,
    /// A bare pickle (`pickle.dump` of a state dict, no zip, no torch magic).
    RawPickle,
    /// Anything else is parsed (and validated) as safetensors.
    Safetensors,
}

pub fn sniff(bytes: &[u8]) -> Format {
    if bytes.starts_with(b"PK\x03\x04") {
        Format::TorchZip
    } else if bytes.len() >= 4 && bytes[0] == 0x80 && bytes[2] == 0x8a && bytes[3] == 0x0a {
        // PROTO n, LONG1 of 10 bytes: torch's magic number 0x1950a86a20f9469cfc6c.
        Format::LegacyTorch
    } else if is_raw_pickle(bytes) {
        Format::RawPickle
    } else {
        Format::Safetensors
    }
}

/// A pickle starts with PROTO (0x80) and its protocol, 2 to 5. A safetensors file
/// can start with the same two bytes (a header length of 0x..0280), but then its
/// JSON header opens with `{` at byte 8; in a pickle byte 8 is inside the first
/// opcodes' arguments (a frame length, a memo index), never that brace.
fn is_raw_pickle(bytes: &[u8]) -> bool {
    bytes.len() > 8 && bytes[0] == 0x80 && (2..=5).contains(&bytes[1]) && bytes[8] != b'{'
}

/// What to tell the user about a [`Format::RawPickle`] file.
pub const RAW_PICKLE_HINT: &str = "legacy raw pickle checkpoint (a bare `pickle.dump`, not a torch zip), \
     not supported: re-save it as safetensors";
