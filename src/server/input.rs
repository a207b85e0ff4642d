//! Request values every API reads the same way: images sent as base64 (or data URLs) and
//! seeds (`-1` or absent: random).

use std::path::Path;

use crate::pipeline::{Mask, RgbImage};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::error::ApiError;

/// An image sent in JSON: base64, optionally as a data URL (`data:image/png;base64,...`),
/// decoded and checked (at least 8 px a side, at most 50 megapixels, read from the header
/// before any pixel is decoded). Errors name `field`.
pub fn decode_image(field: &str, text: &str) -> Result<RgbImage, ApiError> {
    let bytes = decode_base64(field, text)?;
    RgbImage::from_bytes(&bytes, Path::new(field)).map_err(|e| match e {
        crate::Error::BadFile { msg, .. } => ApiError::field(field, msg),
        e => ApiError::field(field, e.to_string()),
    })
}

/// An inpainting mask sent in JSON, as [`decode_image`] (white repaints; see [`Mask::load`]),
/// with the blur `blur`. Errors name `field`.
pub fn decode_mask(field: &str, text: &str, blur: usize) -> Result<Mask, ApiError> {
    let bytes = decode_base64(field, text)?;
    let mask = Mask::from_bytes(&bytes, Path::new(field)).map_err(|e| match e {
        crate::Error::BadFile { msg, .. } => ApiError::field(field, msg),
        e => ApiError::field(field, e.to_string()),
    })?;
    Ok(mask.with_blur(blur))
}

/// The bytes of a file sent in JSON as base64, optionally as a data URL. Errors name `field`.
pub fn decode_base64(field: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    let b64 = match text.strip_prefix("data:") {
        Some(rest) => match rest.split_once(',') {
            Some((meta, data)) if meta.ends_with(";base64") => data,
            _ => {
                return Err(ApiError::field(
                    field,
                    "expected a base64 data URL (data:image/png;base64,...), found a data URL without \";base64,\"",
                ))
            }
        },
        None => text,
    };
    // Some clients wrap base64 in lines.
    let compact: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD.decode(compact.as_bytes()).map_err(|e| {
        ApiError::field(
            field,
            format!("expected a base64-encoded image (or a data URL), but it is not base64: {e}"),
        )
    })
}

/// A seed from a request: `None` or -1 pick a random one (0 to 2^32 - 1, A1111's range, as
/// the CLI does), else 0 to 2^64 - 1.
pub fn seed(field: &str, value: Option<i128>) -> Result<u64, ApiError> {
    match value {
        None | Some(-1) => random_seed(),
        Some(s) => u64::try_from(s).map_err(|_| {
            ApiError::field(
                field,
                format!(
                    "expected a seed from 0 to {}, or -1 for a random one; found {s}",
                    u64::MAX
                ),
            )
        }),
    }
}

fn random_seed() -> Result<u64, ApiError> {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::internal(format!("the OS random source failed: {e}")))?;
    Ok(u32::from_le_bytes(bytes) as u64)
}

/// Base64 (standard alphabet, padded) of bytes, as A1111 and OpenAI send images.
pub fn base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}
