//! A1111's LoRA hash, as its Lora extension computes it (`network.py`,
//! `NetworkOnDisk`): the file's `sshs_model_hash` metadata when kohya's
//! trainer wrote one, else the SHA-256 of a safetensors file's tensor data
//! (the bytes after the header: kohya's "addnet" hash, unchanged by editing
//! the metadata) or of a whole `.pt` file; the infotext's `Lora hashes`
//! carry its first 12 hex digits.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// Hex digits A1111 writes.
const SHORT: usize = 12;

/// The short hash of a file's bytes; `safetensors`: hash the data after the
/// header only. A header length past the end (a file the parser will refuse)
/// hashes nothing rather than panicking.
pub fn short_hash(bytes: &[u8], safetensors: bool) -> String {
    let data = if safetensors {
        let n = bytes
            .get(..8)
            .map_or(u64::MAX, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
        usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_add(8))
            .and_then(|start| bytes.get(start..))
            .unwrap_or(&[])
    } else {
        bytes
    };
    let digest = Sha256::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect::<String>()[..SHORT].to_string()
}

/// The hash kohya's trainer stored in the metadata, when it is one (hex, at
/// least 12 digits: anything else would put arbitrary text in the infotext).
pub fn trained_hash(metadata: &BTreeMap<String, String>) -> Option<String> {
    let h = metadata.get("sshs_model_hash")?;
    (h.len() >= SHORT && h.bytes().all(|b| b.is_ascii_hexdigit())).then(|| h[..SHORT].to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_the_data_after_the_header() {
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        let mut file = 2u64.to_le_bytes().to_vec();
        file.extend_from_slice(b"{}abc");
        assert_eq!(short_hash(&file, true), "ba7816bf8f01");
        assert_eq!(short_hash(b"abc", false), "ba7816bf8f01");
        assert_eq!(short_hash(&u64::MAX.to_le_bytes(), true), short_hash(b"", false));
        let meta = |v: &str| BTreeMap::from([("sshs_model_hash".to_string(), v.to_string())]);
        assert_eq!(
            trained_hash(&meta("ABCDEF0123456789")).as_deref(),
            Some("abcdef012345")
        );
        assert_eq!(trained_hash(&meta("abc, Steps: 1")), None);
    }
}
