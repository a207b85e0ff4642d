//! Every refusal of the safetensors reader names the file and the problem.

use sd_wgpu::tensor::DType;
use sd_wgpu::weights::{StoredDType, TensorSource};

use crate::common::*;

fn refuse(bytes: Vec<u8>, parts: &[&str]) {
    let msg = err(open_bytes("model.safetensors", bytes));
    assert_has(&msg, &["model.safetensors"]);
    assert_has(&msg, parts);
}

#[test]
fn reads_valid_file_and_keeps_integers_apart() {
    let mut half = zeros("h", "F16", 2, &[3]);
    half.data = [1.0f32, -2.0, 0.5]
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
        .collect();
    let tensors = [
        f32s("b.weight", &[2, 3]),
        zeros("position_ids", "I64", 8, &[1, 77]),
        half,
    ];
    let bytes = with_header(&header(&tensors, Some(r#"{"format":"pt"}"#)), &tensors);
    let st = open_bytes("x.safetensors", bytes).unwrap();
    assert_eq!(st.names(), vec!["b.weight".to_string(), "h".to_string()]);
    assert_eq!(st.info("b.weight").unwrap().shape, vec![2, 3]);
    assert_eq!(st.info("h").unwrap().dtype, StoredDType::F16);
    assert!(st.info("position_ids").is_none());
    assert_eq!(st.other_tensors(), vec![("position_ids".to_string(), "I64")]);
    assert_eq!(st.metadata()["format"], "pt");
    assert_eq!(
        st.read("b.weight", DType::F32).unwrap().to_f32().to_vec(),
        vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    );
    assert_eq!(
        st.read("h", DType::F32).unwrap().to_f32().to_vec(),
        vec![1.0, -2.0, 0.5]
    );
    assert_has(&err(st.read("position_ids", DType::F32)), &["I64", "not float"]);
}

#[test]
fn reads_unaligned_data() {
    // A 1-byte tensor first puts every following f32 at an odd offset.
    let tensors = [zeros("flag", "U8", 1, &[1]), f32s("w", &[5])];
    let st = open_bytes("x.safetensors", safetensors(&tensors)).unwrap();
    assert_eq!(
        st.read("w", DType::F32).unwrap().to_f32().to_vec(),
        vec![0.0, 1.0, 2.0, 3.0, 4.0]
    );
}

#[test]
fn refuses_lfs_pointer() {
    let text = b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 4265380512\n";
    refuse(text.to_vec(), &["git-lfs pointer", "git lfs pull"]);
}

#[test]
fn refuses_short_and_huge_headers() {
    refuse(vec![1, 2, 3], &["3 bytes", "incomplete download"]);
    let mut b = safetensors(&[f32s("w", &[2])]);
    b[..8].copy_from_slice(&200_000_000u64.to_le_bytes());
    refuse(b, &["header length 200000000", "100 MB"]);
    let mut b = safetensors(&[f32s("w", &[2])]);
    b[..8].copy_from_slice(&5000u64.to_le_bytes());
    refuse(b, &["header length 5000", "past the end", "incomplete download"]);
}

#[test]
fn refuses_truncated_download() {
    let mut b = safetensors(&[f32s("a", &[4]), f32s("b", &[100])]);
    let full = b.len();
    b.truncate(full - 10);
    refuse(
        b,
        &[
            &format!("file is {} bytes", full - 10),
            &format!("end at {full}"),
            "incomplete download",
        ],
    );
}

#[test]
fn refuses_bad_text() {
    let t = [f32s("w", &[1])];
    let mut b = safetensors(&t);
    b[9] = 0xff;
    refuse(b, &["not valid UTF-8"]);
    refuse(with_header("{\"w\": {", &[]), &["not a valid JSON object"]);
    refuse(with_header("[1, 2]", &[]), &["not a valid JSON object"]);
}

#[test]
fn refuses_bad_metadata() {
    let t = [f32s("w", &[1])];
    refuse(
        with_header(&header(&t, Some("{\"a\": 1}")), &t),
        &["__metadata__", "expected a string"],
    );
    refuse(
        with_header(&header(&t, Some("[]")), &t),
        &["__metadata__", "not a JSON object"],
    );
    refuse(
        with_header(&header(&t, Some("{\"a\": \"x\", \"a\": \"y\"}")), &t),
        &["__metadata__", "\"a\" twice"],
    );
}

#[test]
fn refuses_duplicate_keys() {
    let t = [f32s("w", &[1]), f32s("w", &[1])];
    refuse(safetensors(&t), &["key \"w\" twice"]);
    let h = r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"data_offsets":[0,4]}}"#;
    refuse(
        with_header(h, &[f32s("w", &[1])]),
        &["field \"data_offsets\" twice"],
    );
}

#[test]
fn refuses_malformed_entries() {
    let t = [f32s("w", &[2])];
    for (h, parts) in [
        (r#"{"w": 3}"#, &["\"w\" is not a JSON object"][..]),
        (r#"{"w":{"shape":[2],"data_offsets":[0,8]}}"#, &["no `dtype`"]),
        (r#"{"w":{"dtype":"F32","data_offsets":[0,8]}}"#, &["no `shape`"]),
        (r#"{"w":{"dtype":"F32","shape":[2]}}"#, &["no `data_offsets`"]),
        (
            r#"{"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}"#,
            &["unknown dtype \"Q4\""],
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#,
            &["`shape` is not a list"],
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}}"#,
            &["has 1 values"],
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
            &["end before they begin"],
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            &["needs 12 bytes", "hold 8"],
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#,
            &["too large"],
        ),
    ] {
        refuse(with_header(h, &t), parts);
    }
}

#[test]
fn refuses_gaps_overlaps_and_trailing_bytes() {
    let t = [f32s("a", &[2]), f32s("b", &[2])];
    let gap = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}"#;
    let mut bytes = with_header(gap, &t);
    bytes.extend_from_slice(&[0; 4]);
    refuse(bytes, &["gap of 4 bytes", "\"a\""]);
    let overlap = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let mut bytes = with_header(overlap, &t);
    bytes.truncate(bytes.len() - 4);
    refuse(bytes, &["\"b\"", "overlaps"]);
    let mut bytes = safetensors(&t);
    bytes.extend_from_slice(b"junk");
    refuse(bytes, &["4 trailing bytes"]);
}

#[test]
fn opens_from_disk_and_names_the_path() {
    let dir = std::env::temp_dir().join(format!("sdw-st-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.safetensors");
    std::fs::write(&good, safetensors(&[f32s("w", &[3])])).unwrap();
    let st = sd_wgpu::checkpoint::SafetensorsFile::open(&good).unwrap();
    assert_eq!(
        st.read("w", DType::F16).unwrap().to_f32().to_vec(),
        vec![0.0, 1.0, 2.0]
    );
    let empty = dir.join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    let msg = err(sd_wgpu::checkpoint::SafetensorsFile::open(&empty));
    assert_has(&msg, &["empty.safetensors", "0 bytes"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn refuses_headers_beyond_the_limits() {
    // More entries than any real file: refused as the parse reaches the limit.
    let many: Vec<String> = (0..100_001)
        .map(|i| format!("\"t{i}\":{{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}"))
        .collect();
    refuse(
        with_header(&format!("{{{}}}", many.join(",")), &[]),
        &["more than 100000 tensors"],
    );
    let long_shape = format!("[{}]", vec!["1"; 65].join(","));
    let h = format!(r#"{{"w":{{"dtype":"F32","shape":{long_shape},"data_offsets":[0,4]}}}}"#);
    refuse(
        with_header(&h, &[f32s("w", &[1])]),
        &["`shape` is not a list of at most 64"],
    );
    let fields: Vec<String> = (0..17).map(|i| format!("\"f{i}\":0")).collect();
    let h = format!(r#"{{"w":{{{}}}}}"#, fields.join(","));
    refuse(with_header(&h, &[]), &["\"w\" has more than 16 fields"]);
    refuse(
        with_header(r#"{"__metadata__":{"a":["x"]}}"#, &[]),
        &["`__metadata__` value of \"a\" is a list, expected a string"],
    );
}

#[test]
fn header_length_that_starts_like_a_pickle_is_still_safetensors() {
    // A 640-byte header: its length starts 0x80 0x02, like a protocol-2 pickle.
    let t = [f32s("w", &[2])];
    let mut h = header(&t, None);
    h.push_str(&" ".repeat(640 - h.len()));
    let bytes = with_header(&h, &t);
    assert_eq!(bytes[..2], [0x80, 0x02]);
    let st = open_bytes("x.safetensors", bytes).unwrap();
    assert_eq!(st.names(), ["w"]);
}
