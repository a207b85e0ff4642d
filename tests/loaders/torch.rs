//! Torch zip checkpoints written by `torch.save`, read bit for bit, and the
//! refusals of the non-executing pickle reader.

use std::path::PathBuf;
use std::sync::Arc;

use sd_wgpu::checkpoint::bytes::FileBytes;
use sd_wgpu::checkpoint::pickle::{Global, Node};
use sd_wgpu::checkpoint::{SafetensorsFile, TorchFile, TorchSource};
use sd_wgpu::tensor::{CpuData, DType};
use sd_wgpu::weights::{StoredDType, TensorSource};

use crate::common::*;

fn expected() -> SafetensorsFile {
    SafetensorsFile::open(fixture("expected.safetensors")).unwrap()
}

fn bits(d: &CpuData) -> Vec<u32> {
    match d {
        CpuData::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
        CpuData::F16(v) => v.iter().map(|x| x.to_bits() as u32).collect(),
    }
}

fn check_tiny(name: &str) {
    let src = TorchSource::open(fixture(name)).unwrap();
    let want = expected();
    let names = [
        "first_stage_model.quant_conv.weight",
        "model.diffusion_model.out.2.bias",
        "model.diffusion_model.out.2.weight",
        "scalar",
        "shared_head",
        "shared_tail",
        "strided",
        "transposed",
    ];
    assert_eq!(
        src.names(),
        names.map(String::from).to_vec(),
        "int64 position_ids must not be listed"
    );
    for n in names {
        let key = format!("tiny.ckpt/{n}");
        let (a, b) = (src.info(n).unwrap(), want.info(&key).unwrap());
        assert_eq!(a, b, "{n}");
        // f16 read as f16 keeps the stored bits; everything read as f32 is exact.
        let native = if a.dtype == StoredDType::F16 {
            DType::F16
        } else {
            DType::F32
        };
        assert_eq!(
            bits(&src.read(n, native).unwrap()),
            bits(&want.read(&key, native).unwrap()),
            "{n}"
        );
        assert_eq!(
            bits(&src.read(n, DType::F32).unwrap()),
            bits(&want.read(&key, DType::F32).unwrap()),
            "{n}"
        );
    }
    assert_eq!(src.info("transposed").unwrap().shape, vec![6, 4]);
    assert_eq!(src.info("scalar").unwrap().shape, Vec::<usize>::new());
    assert_eq!(
        src.info("model.diffusion_model.out.2.bias").unwrap().dtype,
        StoredDType::BF16
    );
}

#[test]
fn reads_torch_save_ckpt_bit_for_bit() {
    check_tiny("tiny.ckpt");
}

#[test]
fn reads_deflated_archive() {
    check_tiny("tiny_deflated.ckpt");
}

#[test]
fn keeps_lightning_metadata_inert() {
    let f = TorchFile::open(fixture("tiny.ckpt")).unwrap();
    let p = f.pickle();
    let epoch = p.get(p.root, "epoch").unwrap();
    assert_eq!(p.node(epoch), &Node::Int(6));
    let step = p.get(p.root, "global_step").unwrap();
    assert_eq!(p.node(step), &Node::Int(470000));
    let callbacks = p.get(p.root, "callbacks").unwrap();
    let items = p.dict_items(callbacks).unwrap();
    assert_eq!(
        p.node(items[0].0),
        &Node::Global(Global::Opaque("ModelCheckpoint"))
    );
}

#[test]
fn refuses_legacy_format() {
    let msg = err(TorchFile::open(fixture("legacy.pt")));
    assert_has(&msg, &["legacy.pt", "legacy", "torch >= 1.6"]);
}

fn open_zip(bytes: Vec<u8>) -> sd_wgpu::Result<TorchFile> {
    TorchFile::from_bytes(PathBuf::from("model.ckpt"), FileBytes::Owned(bytes))
}

#[test]
fn reads_hand_built_pickle() {
    // A [2, 3] view with strides (1, 2): the transpose of a [3, 2] storage.
    let pkl = tensor_pickle("FloatStorage", 6, 0, &[2, 3], &[1, 2]);
    let f = Arc::new(open_zip(torch_zip(&pkl, &[("0", le_f32(&[0., 1., 2., 3., 4., 5.]))])).unwrap());
    let src = TorchSource::new(f).unwrap();
    assert_eq!(
        src.read("w", DType::F32).unwrap().to_f32().to_vec(),
        vec![0., 2., 4., 1., 3., 5.]
    );
}

#[test]
fn reads_empty_view_at_any_offset() {
    let pkl = tensor_pickle("FloatStorage", 4, 200, &[0, 3], &[3, 1]);
    let f = Arc::new(open_zip(torch_zip(&pkl, &[("0", le_f32(&[0.; 4]))])).unwrap());
    let src = TorchSource::new(f).unwrap();
    assert_eq!(src.info("w").unwrap().shape, vec![0, 3]);
    assert!(src.read("w", DType::F32).unwrap().is_empty());
}

#[test]
fn refuses_forbidden_globals() {
    let mut pkl = vec![0x80, 2];
    pkl.extend_from_slice(b"cos\nsystem\n");
    pkl.extend(pstr("echo pwned"));
    pkl.extend_from_slice(&[0x85, b'R', b'.']);
    let msg = err(open_zip(torch_zip(&pkl, &[])));
    assert_has(&msg, &["model.ckpt", "`os.system`", "not on the list"]);
    let mut pkl = vec![0x80, 4];
    pkl.extend(pstr("builtins"));
    pkl.extend(pstr("eval"));
    pkl.extend_from_slice(&[0x93, b'.']);
    assert_has(&err(open_zip(torch_zip(&pkl, &[]))), &["`builtins.eval`"]);
}

#[test]
fn refuses_views_outside_their_storage() {
    let pkl = tensor_pickle("FloatStorage", 4, 2, &[3], &[1]);
    let msg = err(open_zip(torch_zip(&pkl, &[("0", le_f32(&[0.; 4]))])));
    assert_has(&msg, &["model.ckpt", "reaches element 4", "4 elements"]);
    // The storage claims more elements than its zip entry holds.
    let pkl = tensor_pickle("FloatStorage", 8, 0, &[8], &[1]);
    let msg = err(open_zip(torch_zip(&pkl, &[("0", le_f32(&[0.; 4]))])));
    assert_has(&msg, &["storage 0", "8 f32 elements", "16 bytes"]);
    // No data entry at all.
    let msg = err(open_zip(torch_zip(&pkl, &[])));
    assert_has(&msg, &["storage 0 has no data entry"]);
    // Unknown storage type.
    let pkl = tensor_pickle("QInt8Storage", 4, 0, &[4], &[1]);
    assert_has(&err(open_zip(torch_zip(&pkl, &[]))), &["torch.QInt8Storage"]);
}

#[test]
fn refuses_damaged_pickles_and_archives() {
    let good = tensor_pickle("FloatStorage", 4, 0, &[4], &[1]);
    let cut = &good[..good.len() - 2];
    assert_has(&err(open_zip(torch_zip(cut, &[]))), &["data.pkl", "ends early"]);
    let msg = err(open_zip(b"PK\x03\x04 not really a zip".to_vec()));
    assert_has(&msg, &["model.ckpt", "damaged zip"]);
    let msg = err(open_zip(b"hello".to_vec()));
    assert_has(&msg, &["not a torch zip checkpoint"]);
    let msg = err(open_zip(b"version https://git-lfs.github.com/spec/v1\n".to_vec()));
    assert_has(&msg, &["git lfs pull"]);
    let msg = err(open_zip(torch_zip(b"", &[("0", vec![])])));
    assert_has(&msg, &["ends early"]);
}

#[test]
fn reads_module_state_dict_bin() {
    // torch.save(module.state_dict()): an OrderedDict with `_metadata`, as in
    // the `.bin` files of older diffusers folders.
    let src = TorchSource::open(fixture("state_dict.bin")).unwrap();
    let want = expected();
    assert_eq!(
        src.names(),
        ["0.bias", "0.weight", "1.bias", "1.weight"]
            .map(String::from)
            .to_vec()
    );
    for n in src.names() {
        let key = format!("state_dict.bin/{n}");
        assert_eq!(src.info(&n), want.info(&key), "{n}");
        assert_eq!(
            bits(&src.read(&n, DType::F16).unwrap()),
            bits(&want.read(&key, DType::F16).unwrap())
        );
    }
}

#[test]
fn pickle_machine_bounds() {
    use sd_wgpu::checkpoint::pickle::parse;
    // A later SETITEM of an equal key replaces the value, as in Python.
    let mut p = vec![0x80, 2, b'}'];
    for v in [1u8, 2] {
        p.extend(pstr("k"));
        p.extend_from_slice(&[b'K', v, b's']);
    }
    p.push(b'.');
    let t = parse(&p).unwrap();
    assert_eq!(t.dict_items(t.root).unwrap().len(), 1);
    assert_eq!(t.node(t.get(t.root, "k").unwrap()), &Node::Int(2));
    // Lists nested a million deep: no recursion anywhere, in parsing or dropping.
    let depth = 1_000_000;
    let mut p = vec![0x80, 2];
    p.extend(std::iter::repeat_n(b']', depth));
    p.extend(std::iter::repeat_n(b'a', depth - 1));
    p.push(b'.');
    assert!(parse(&p).is_ok());
    // One large list copied by many calls runs out of the copy budget.
    let mut p = vec![0x80, 2, b'c'];
    p.extend_from_slice(b"builtins\nset\nq\x00](");
    p.extend(std::iter::repeat_n(b'N', 100_000));
    p.extend_from_slice(b"eq\x01");
    for _ in 0..1000 {
        p.extend_from_slice(b"h\x00h\x01\x85R0");
    }
    p.push(b'.');
    assert!(parse(&p).unwrap_err().contains("too many items"));
    // Stack underflow, missing marks, unknown memo entries, bad protocol.
    for (bad, want) in [
        (&b"\x80\x02a."[..], "stack underflow"),
        (b"\x80\x02t.", "no mark"),
        (b"\x80\x02h\x05.", "memo entry 5"),
        (b"\x80\x09N.", "protocol 9"),
        (b"\x80\x02(N0.", "pop across a mark"),
        (b"\x80\x02I1\n.", "protocol 0"),
    ] {
        let e = parse(bad).unwrap_err();
        assert!(e.contains(want), "{e}");
    }
}

#[test]
fn refuses_entry_claiming_more_than_deflate_can_hold() {
    // tiny/data/7 is 133 bytes deflated; its central directory entry now claims it
    // inflates to 10 MB, a ratio no deflate stream reaches: refused before inflating.
    let mut bytes = std::fs::read(fixture("tiny_deflated.ckpt")).unwrap();
    let name = b"tiny/data/7";
    let at = (0..bytes.len() - 46)
        .find(|&i| bytes[i..].starts_with(b"PK\x01\x02") && bytes[i + 46..].starts_with(name))
        .expect("central directory entry of tiny/data/7");
    bytes[at + 24..at + 28].copy_from_slice(&10_000_000u32.to_le_bytes());
    let msg = err(TorchFile::from_bytes(
        PathBuf::from("claims.ckpt"),
        FileBytes::Owned(bytes),
    ));
    assert_has(
        &msg,
        &["claims.ckpt", "tiny/data/7", "10000000", "more than deflate"],
    );
}

#[test]
fn names_raw_pickles() {
    // pickle.dump({"w": 1}, protocol=2): neither a torch zip nor the legacy format.
    let mut pkl = vec![0x80, 2, b'}', b'q', 0, b'('];
    pkl.extend(pstr("w"));
    pkl.extend_from_slice(&[b'K', 1, b'u', b'.']);
    let msg = err(TorchFile::from_bytes(
        PathBuf::from("raw.ckpt"),
        FileBytes::Owned(pkl.clone()),
    ));
    assert_has(&msg, &["raw.ckpt", "legacy raw pickle", "safetensors"]);
    let msg = err(open_bytes("raw.safetensors", pkl));
    assert_has(&msg, &["raw.safetensors", "legacy raw pickle"]);
}
