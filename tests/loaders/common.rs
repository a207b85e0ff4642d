//! Helpers of the loader tests: building safetensors files byte by byte.

use std::path::{Path, PathBuf};

use sd_wgpu::checkpoint::bytes::FileBytes;
use sd_wgpu::checkpoint::SafetensorsFile;

/// A tensor to write: name, dtype string, shape, raw little-endian bytes.
pub struct T {
    pub name: String,
    pub dtype: &'static str,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// An f32 tensor with the values 0, 1, 2...
pub fn f32s(name: &str, shape: &[usize]) -> T {
    let n: usize = shape.iter().product();
    T {
        name: name.into(),
        dtype: "F32",
        shape: shape.to_vec(),
        data: (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect(),
    }
}

/// A tensor of `dtype` (element size `size`) whose bytes are all zero.
pub fn zeros(name: &str, dtype: &'static str, size: usize, shape: &[usize]) -> T {
    let n: usize = shape.iter().product();
    T {
        name: name.into(),
        dtype,
        shape: shape.to_vec(),
        data: vec![0; n * size],
    }
}

/// The JSON header text of `tensors` laid out back to back.
pub fn header(tensors: &[T], metadata: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(m) = metadata {
        parts.push(format!("\"__metadata__\":{m}"));
    }
    let mut pos = 0;
    for t in tensors {
        parts.push(format!(
            "{:?}:{{\"dtype\":\"{}\",\"shape\":{:?},\"data_offsets\":[{},{}]}}",
            t.name,
            t.dtype,
            t.shape,
            pos,
            pos + t.data.len()
        ));
        pos += t.data.len();
    }
    format!("{{{}}}", parts.join(","))
}

/// A file with the given header text followed by the tensors' data.
pub fn with_header(header: &str, tensors: &[T]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    for t in tensors {
        out.extend_from_slice(&t.data);
    }
    out
}

/// A valid safetensors file.
pub fn safetensors(tensors: &[T]) -> Vec<u8> {
    with_header(&header(tensors, None), tensors)
}

/// Parses `bytes` as if read from `name`.
pub fn open_bytes(name: &str, bytes: Vec<u8>) -> sd_wgpu::Result<SafetensorsFile> {
    SafetensorsFile::from_bytes(PathBuf::from(name), FileBytes::Owned(bytes))
}

/// Writes a safetensors file whose data area is a hole (sparse on disk): real
/// SD shapes without gigabytes of disk. Tensor data reads back as zeros.
pub fn write_sparse(path: &Path, tensors: &[(String, &'static str, Vec<usize>)]) {
    let size = |d: &str| match d {
        "F32" | "I32" => 4,
        "F16" | "BF16" => 2,
        "I64" => 8,
        other => panic!("test helper: dtype {other}"),
    };
    let mut parts = Vec::new();
    let mut pos = 0usize;
    for (name, dtype, shape) in tensors {
        let n = shape.iter().product::<usize>() * size(dtype);
        parts.push(format!(
            "{name:?}:{{\"dtype\":\"{dtype}\",\"shape\":{shape:?},\"data_offsets\":[{pos},{}]}}",
            pos + n
        ));
        pos += n;
    }
    let header = format!("{{{}}}", parts.join(","));
    let mut f = std::fs::File::create(path).unwrap();
    use std::io::Write;
    f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    f.write_all(header.as_bytes()).unwrap();
    f.set_len((8 + header.len() + pos) as u64).unwrap();
}

/// The error text of a result that must be an error.
pub fn err<T>(r: sd_wgpu::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

/// Asserts `msg` contains every one of `parts`.
pub fn assert_has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "expected {p:?} in: {msg}");
    }
}
