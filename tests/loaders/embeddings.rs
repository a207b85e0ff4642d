//! Textual-inversion files of every supported layout, read bit for bit against
//! the values the Python writers stored, and the refusals.

use std::path::Path;

use sd_wgpu::checkpoint::bytes::FileBytes;
use sd_wgpu::checkpoint::{Embedding, SafetensorsFile};
use sd_wgpu::tensor::DType;
use sd_wgpu::weights::TensorSource;

use crate::common::*;

#[test]
fn reads_every_layout_bit_for_bit() {
    let want = SafetensorsFile::open(fixture("expected.safetensors")).unwrap();
    let triggers: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&want.metadata()["triggers"]).unwrap();
    assert_eq!(triggers.len(), 6);
    for (file, trigger) in &triggers {
        let e = Embedding::load(fixture(file)).unwrap();
        let shape = want.info(file).unwrap().shape;
        assert_eq!(&e.trigger, trigger, "{file}");
        assert_eq!((e.n, e.width), (shape[0], shape[1]), "{file}");
        let values = want.read(file, DType::F32).unwrap().to_f32().to_vec();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&e.vectors), bits(&values), "{file}");
        e.validate_width(768).unwrap();
    }
}

#[test]
fn width_check_names_the_trigger() {
    let e = Embedding::load(fixture("bad-hands.pt")).unwrap();
    let msg = err(e.validate_width(1024));
    assert_has(&msg, &["\"bad-hands\"", "width 768", "SD 1.x", "1024"]);
}

fn refuse(name: &str, bytes: Vec<u8>, parts: &[&str]) {
    let msg = err(Embedding::from_bytes(Path::new(name), FileBytes::Owned(bytes)));
    assert_has(&msg, &[name]);
    assert_has(&msg, parts);
}

#[test]
fn refuses_unusable_files() {
    refuse(
        "two.safetensors",
        safetensors(&[f32s("<a>", &[768]), f32s("<b>", &[768])]),
        &["2 tensors", "<a>, <b>"],
    );
    refuse(
        "ids.safetensors",
        safetensors(&[zeros("ids", "I64", 8, &[4])]),
        &["\"ids\"", "I64", "not float"],
    );
    refuse("none.safetensors", safetensors(&[]), &["no tensors"]);
    refuse(
        "empty.safetensors",
        safetensors(&[f32s("emb_params", &[0, 768])]),
        &["empty"],
    );
    refuse(
        "cube.safetensors",
        safetensors(&[f32s("emb_params", &[2, 3, 4])]),
        &["[2, 3, 4]"],
    );
    refuse(
        "xl.safetensors",
        safetensors(&[f32s("clip_l", &[2, 768]), f32s("clip_g", &[2, 1280])]),
        &["SDXL"],
    );
    let mut nan = f32s("emb_params", &[2]);
    nan.data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    refuse("nan.safetensors", safetensors(&[nan]), &["NaN"]);
    // A torch checkpoint that is not an embedding: no top-level tensors.
    let ckpt = std::fs::read(fixture("tiny.ckpt")).unwrap();
    refuse("tiny.bin", ckpt, &["unknown layout"]);
    // Integer token ids where vectors are expected.
    let pkl = tensor_pickle("LongStorage", 4, 0, &[4], &[1]);
    refuse(
        "ids.bin",
        torch_zip(&pkl, &[("0", vec![0; 32])]),
        &["i64", "not float"],
    );
}
