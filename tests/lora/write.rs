//! Small safetensors files for the LoRA tests (f32 tensors, optional metadata).

use std::path::Path;

/// One tensor: name, shape, values.
pub type T = (String, Vec<usize>, Vec<f32>);

pub fn tensor(name: &str, shape: &[usize], value: f32) -> T {
    let n = shape.iter().product();
    // Distinct values, so a transposed or misplaced product shows.
    let values = (0..n).map(|i| value * (1.0 + (i % 7) as f32 / 7.0)).collect();
    (name.to_string(), shape.to_vec(), values)
}

pub fn safetensors(path: &Path, tensors: &[T], metadata: &[(&str, &str)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let begin = data.len();
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [begin, data.len()]}),
        );
    }
    if !metadata.is_empty() {
        let m: serde_json::Map<String, serde_json::Value> = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        header.insert("__metadata__".into(), serde_json::Value::Object(m));
    }
    let text = serde_json::to_string(&header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&data);
    std::fs::write(path, out).unwrap();
}
