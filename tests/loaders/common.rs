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

/// The fixture `name` of `tests/fixtures/loaders/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/loaders")
        .join(name)
}

/// A zip in the torch layout: `archive/data.pkl` and `archive/data/<key>`.
pub fn torch_zip(pkl: &[u8], storages: &[(&str, Vec<u8>)]) -> Vec<u8> {
    use std::io::Write;
    use zip::write::SimpleFileOptions;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    w.start_file("archive/data.pkl", opts).unwrap();
    w.write_all(pkl).unwrap();
    for (key, data) in storages {
        w.start_file(format!("archive/data/{key}"), opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Pickle opcodes for a short text string.
pub fn pstr(s: &str) -> Vec<u8> {
    let mut v = vec![b'X'];
    v.extend_from_slice(&(s.len() as u32).to_le_bytes());
    v.extend_from_slice(s.as_bytes());
    v
}

/// Pickle opcodes for a tuple of small ints.
pub fn pints(v: &[u8]) -> Vec<u8> {
    let mut out = vec![b'('];
    for &i in v {
        out.extend_from_slice(&[b'K', i]);
    }
    out.push(b't');
    out
}

/// A pickle of `{"w": tensor}` where the tensor views storage "0" (of
/// `numel` elements of `storage_type`) at `offset` with `size` and `stride`,
/// the way `torch.save` writes it.
pub fn tensor_pickle(storage_type: &str, numel: u8, offset: u8, size: &[u8], stride: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}', b'('];
    p.extend(pstr("w"));
    p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    p.push(b'(');
    p.extend(pstr("storage"));
    p.extend_from_slice(format!("ctorch\n{storage_type}\n").as_bytes());
    p.extend(pstr("0"));
    p.extend(pstr("cpu"));
    p.extend_from_slice(&[b'K', numel, b't', b'Q', b'K', offset]);
    p.extend(pints(size));
    p.extend(pints(stride));
    p.push(0x89);
    p.extend_from_slice(b"ccollections\nOrderedDict\n)R");
    p.extend_from_slice(b"tRu.");
    p
}

/// f32 values as little-endian bytes.
pub fn le_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Pickle opcodes for an int.
fn pint(v: usize) -> Vec<u8> {
    let mut out = vec![b'J'];
    out.extend_from_slice(&(v as i32).to_le_bytes());
    out
}

/// A torch zip of `{"state_dict": {name: tensor}}` with contiguous f16
/// tensors of the given shapes (zero data), as a Lightning `.ckpt` holds them.
pub fn ckpt_zip(tensors: &[(&str, &[usize])]) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}'];
    p.extend(pstr("state_dict"));
    p.extend_from_slice(b"}(");
    let mut storages = Vec::new();
    for (i, (name, shape)) in tensors.iter().enumerate() {
        let numel: usize = shape.iter().product();
        let key = i.to_string();
        p.extend(pstr(name));
        p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        p.push(b'(');
        p.extend(pstr("storage"));
        p.extend_from_slice(b"ctorch\nHalfStorage\n");
        p.extend(pstr(&key));
        p.extend(pstr("cpu"));
        p.extend(pint(numel));
        p.extend_from_slice(b"tQ");
        p.extend(pint(0));
        let mut stride = vec![1; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * shape[d + 1];
        }
        for dims in [*shape, &stride[..]] {
            p.push(b'(');
            for &d in dims {
                p.extend(pint(d));
            }
            p.push(b't');
        }
        p.push(0x89);
        p.extend_from_slice(b"ccollections\nOrderedDict\n)RtR");
        storages.push((key, vec![0u8; numel * 2]));
    }
    p.extend_from_slice(b"us.");
    let refs: Vec<(&str, Vec<u8>)> = storages.iter().map(|(k, d)| (k.as_str(), d.clone())).collect();
    torch_zip(&p, &refs)
}
