//! Fuzz-style robustness test: thousands of corrupted variants of valid small
//! files (a safetensors file, torch.save zips, a textual-inversion .bin, LoRA
//! files in both formats) fed to every loader. Each must return a clean `Err` or a valid result whose every
//! tensor reads back; a panic fails the test and names the variant. Seeded
//! and bounded: runs in seconds.

#[allow(dead_code)]
#[path = "loaders/common.rs"]
mod common;

use std::io::{Cursor, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use common::*;
use sd_wgpu::checkpoint::bytes::FileBytes;
use sd_wgpu::checkpoint::{Checkpoint, Embedding, SafetensorsFile, TorchFile, TorchSource};
use sd_wgpu::lora::{Bases, LoraFile, LoraSet, LoraSpec};
use sd_wgpu::tensor::DType;
use sd_wgpu::weights::TensorSource;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn read_all(src: &dyn TensorSource) {
    for n in src.names() {
        let info = src.info(&n).expect("listed tensor has info");
        if let Ok(d) = src.read(&n, DType::F32) {
            assert_eq!(d.len(), info.shape.iter().product::<usize>(), "{n}");
        }
    }
}

/// Each loader returns whether the variant was accepted.
type Load = fn(Vec<u8>) -> bool;

fn load_safetensors(bytes: Vec<u8>) -> bool {
    let r = SafetensorsFile::from_bytes(PathBuf::from("fuzz.safetensors"), FileBytes::Owned(bytes));
    r.map(|st| read_all(&st)).is_ok()
}

fn load_torch(bytes: Vec<u8>) -> bool {
    let r = TorchFile::from_bytes(PathBuf::from("fuzz.ckpt"), FileBytes::Owned(bytes))
        .and_then(|f| TorchSource::new(Arc::new(f)));
    r.map(|src| read_all(&src)).is_ok()
}

fn load_embedding(bytes: Vec<u8>) -> bool {
    Embedding::from_bytes(Path::new("fuzz.bin"), FileBytes::Owned(bytes)).is_ok()
}

/// The model LoRA variants are matched to: the tiny pipeline model.
fn lora_base() -> &'static Checkpoint {
    static CK: OnceLock<Checkpoint> = OnceLock::new();
    CK.get_or_init(|| {
        sd_wgpu::checkpoint::open(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipeline/model"))
            .unwrap()
    })
}

/// A LoRA variant: matched to the model and, when accepted, merged (every weight it changes read).
fn load_lora(bytes: Vec<u8>, name: &str) -> bool {
    let ck = lora_base();
    let bases = Bases {
        unet: &*ck.unet.weights,
        text_encoder: &*ck.text_encoder.weights,
    };
    let Ok(file) = LoraFile::from_bytes(Path::new(name), FileBytes::Owned(bytes.clone()), bases) else {
        return false;
    };
    let path = std::env::temp_dir().join(format!("sdw-fuzz-{}-{name}", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let set = LoraSet::open(
        ck.unet.weights.clone(),
        ck.text_encoder.weights.clone(),
        &[LoraSpec::file(&path, 0.7)],
    );
    let merged = set.map(|set| {
        for layer in &file.layers {
            let src = set.source(layer.part);
            let info = src.info(&layer.weight).expect("a matched weight");
            let d = src.read(&layer.weight, DType::F16).expect("reads merged");
            assert_eq!(d.len(), info.shape.iter().product::<usize>(), "{}", layer.weight);
        }
    });
    std::fs::remove_file(&path).unwrap();
    merged.is_ok()
}

fn load_lora_safetensors(bytes: Vec<u8>) -> bool {
    load_lora(bytes, "fuzz.safetensors")
}

fn load_lora_pt(bytes: Vec<u8>) -> bool {
    load_lora(bytes, "fuzz.pt")
}

/// Variants tried, and how many were accepted.
#[derive(Default)]
struct Tally {
    tried: usize,
    accepted: usize,
}

impl Tally {
    /// Runs `load` on `variant`, turning a panic into a test failure that
    /// says which variant it was.
    fn check(&mut self, what: &str, load: Load, variant: Vec<u8>) {
        self.tried += 1;
        let copy = variant.clone();
        match catch_unwind(AssertUnwindSafe(|| load(copy))) {
            Ok(accepted) => self.accepted += accepted as usize,
            Err(_) => {
                let path = std::env::temp_dir().join(format!("sdw-fuzz-failure-{what}.bin"));
                std::fs::write(&path, &variant).unwrap();
                panic!(
                    "{what}: loader panicked on variant #{} (saved to {})",
                    self.tried,
                    path.display()
                );
            }
        }
    }

    /// The corruptions must exercise both outcomes: flips inside tensor data
    /// leave a valid file, most others are refused.
    fn assert_mixed(&self, what: &str, min: usize) {
        assert!(self.tried >= min, "{what}: only {} variants", self.tried);
        let refused = self.tried - self.accepted;
        assert!(
            self.accepted * 50 >= self.tried && refused * 2 >= self.tried,
            "{what}: {} of {} variants accepted",
            self.accepted,
            self.tried
        );
    }
}

/// Generic damage: bit flips, byte overwrites, truncations, insertions.
fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    match rng.below(5) {
        0 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
        }
        1 => {
            let special = [0x00, 0xff, 0x7f, 0x80, b'"', b'{', b'}', b',', b'9', b'-'];
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(v.len());
                v[i] = special[rng.below(special.len())];
            }
        }
        2 => {
            let at = rng.below(v.len());
            v.truncate(at);
        }
        3 => {
            let at = rng.below(v.len());
            let n = 1 + rng.below(16);
            let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            v.splice(at..at, junk);
        }
        _ => {
            let at = rng.below(v.len());
            let n = (1 + rng.below(16)).min(v.len() - at);
            v.drain(at..at + n);
        }
    }
    v
}

fn base_safetensors() -> Vec<u8> {
    let mut half = zeros("h", "F16", 2, &[2, 3]);
    half.data = (0..6)
        .flat_map(|i| half::f16::from_f32(i as f32).to_le_bytes())
        .collect();
    let mut bf = zeros("b", "BF16", 2, &[4]);
    bf.data = (0..4)
        .flat_map(|i| half::bf16::from_f32(i as f32).to_le_bytes())
        .collect();
    let t = [
        f32s("a.weight", &[3, 4]),
        half,
        bf,
        zeros("position_ids", "I64", 8, &[1, 5]),
        f32s("scalar", &[]),
    ];
    with_header(&header(&t, Some(r#"{"format":"pt","note":"fuzz base"}"#)), &t)
}

/// Header edits that keep the file's shape but change what the JSON says.
fn edit_header(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let n = u64::from_le_bytes(base[..8].try_into().unwrap()) as usize;
    let mut text = String::from_utf8(base[8..8 + n].to_vec()).unwrap();
    let data = &base[8 + n..];
    match rng.below(6) {
        0 => {
            // Replace one number with something hostile.
            let digits: Vec<usize> = text
                .match_indices(|c: char| c.is_ascii_digit())
                .map(|(i, _)| i)
                .collect();
            let i = digits[rng.below(digits.len())];
            let hostile = [
                "18446744073709551615",
                "-1",
                "1e400",
                "4294967296",
                "0",
                "99999999999",
                "1.5",
            ];
            text.replace_range(i..i + 1, hostile[rng.below(hostile.len())]);
        }
        1 => {
            let dtypes = ["F32", "F16", "BF16", "I64", "U8", "F64", "BOOL", "F4", "X", ""];
            let from = ["\"F32\"", "\"F16\"", "\"BF16\"", "\"I64\""][rng.below(4)];
            let to = format!("\"{}\"", dtypes[rng.below(dtypes.len())]);
            text = text.replacen(from, &to, 1);
        }
        2 => {
            // Duplicate a tensor entry (`a.weight` of the base file, else the first key).
            let start = text.find("\"a.weight\"").or_else(|| text.find('"')).unwrap();
            let end = text[start..].find('}').unwrap() + start + 1;
            let entry = text[start..end].to_string();
            text.insert_str(end, &format!(",{entry}"));
        }
        3 => {
            let keys = ["dtype", "shape", "data_offsets", "__metadata__", "format"];
            let k = keys[rng.below(keys.len())];
            text = text.replacen(k, &format!("{k}x"), 1);
        }
        4 => {
            let structural = ['{', '}', '[', ']', ':', ',', '"'];
            let pos: Vec<usize> = text
                .match_indices(|c| structural.contains(&c))
                .map(|(i, _)| i)
                .collect();
            let i = pos[rng.below(pos.len())];
            text.remove(i);
        }
        _ => {
            let mut out = with_header(&text, &[]);
            out.extend_from_slice(data);
            let delta = rng.below(17) as i64 - 8;
            let len = (n as i64 + delta).max(0) as u64;
            out[..8].copy_from_slice(&len.to_le_bytes());
            return out;
        }
    }
    let mut out = with_header(&text, &[]);
    out.extend_from_slice(data);
    out
}

#[test]
fn fuzz_safetensors() {
    let base = base_safetensors();
    let mut rng = Rng(0x5eed_0001);
    let mut t = Tally::default();
    assert!(load_safetensors(base.clone()));
    for at in 0..base.len() {
        t.check("safetensors", load_safetensors, base[..at].to_vec());
    }
    for _ in 0..3000 {
        t.check("safetensors", load_safetensors, mutate(&mut rng, &base));
    }
    for _ in 0..3000 {
        t.check("safetensors", load_safetensors, edit_header(&mut rng, &base));
    }
    t.assert_mixed("safetensors", 6000);
}

/// The entries of a zip, to rebuild it with one of them changed.
fn entries(zip: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut a = zip::ZipArchive::new(Cursor::new(zip)).unwrap();
    (0..a.len())
        .map(|i| {
            let mut f = a.by_index(i).unwrap();
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            (f.name().unwrap().to_string(), data)
        })
        .collect()
}

fn rezip(entries: &[(String, Vec<u8>)], deflate: bool) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let opts = SimpleFileOptions::default().compression_method(method);
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in entries {
        w.start_file(name.as_str(), opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn fuzz_torch_file(name: &str, load: Load, seed: u64) -> Tally {
    fuzz_torch_bytes(name, std::fs::read(fixture(name)).unwrap(), load, seed)
}

/// [`fuzz_torch_file`] on a torch zip's bytes; `name` says which in messages.
fn fuzz_torch_bytes(name: &str, base: Vec<u8>, load: Load, seed: u64) -> Tally {
    let mut rng = Rng(seed);
    let mut t = Tally::default();
    assert!(load(base.clone()), "{name} itself must load");
    // Raw damage to the archive, including a cut at every byte.
    for at in 0..base.len() {
        t.check(name, load, base[..at].to_vec());
    }
    for _ in 0..1500 {
        t.check(name, load, mutate(&mut rng, &base));
    }
    // A sound zip around a damaged pickle or storage: reaches the pickle VM
    // and the tensor checks instead of stopping at the zip's CRCs.
    let items = entries(&base);
    let pkl = items.iter().position(|(n, _)| n.ends_with("/data.pkl")).unwrap();
    for i in 0..1500 {
        let mut e = items.clone();
        let target = if i % 5 == 4 { rng.below(e.len()) } else { pkl };
        if !e[target].1.is_empty() {
            e[target].1 = mutate(&mut rng, &e[target].1);
        }
        t.check(name, load, rezip(&e, i % 7 == 0));
    }
    let data = &items[pkl].1;
    for at in 0..data.len() {
        let mut e = items.clone();
        e[pkl].1.truncate(at);
        t.check(name, load, rezip(&e, false));
    }
    t
}

#[test]
fn fuzz_torch_checkpoint() {
    fuzz_torch_file("tiny.ckpt", load_torch, 0x5eed_0002).assert_mixed("tiny.ckpt", 6000);
    fuzz_torch_file("tiny_deflated.ckpt", load_torch, 0x5eed_0003).assert_mixed("tiny_deflated.ckpt", 5000);
}

#[test]
fn fuzz_embeddings() {
    fuzz_torch_file("learned_embeds.bin", load_embedding, 0x5eed_0004)
        .assert_mixed("learned_embeds.bin", 6000);
    fuzz_torch_file("bad-hands.pt", load_embedding, 0x5eed_0005).assert_mixed("bad-hands.pt", 6000);
    let mut rng = Rng(0x5eed_0006);
    let base = std::fs::read(fixture("kohya-style.safetensors")).unwrap();
    let mut t = Tally::default();
    for _ in 0..1000 {
        t.check("kohya-style.safetensors", load_embedding, mutate(&mut rng, &base));
    }
    t.assert_mixed("kohya-style.safetensors", 1000);
}

#[test]
fn fuzz_loras() {
    let lora = |f: &str| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/lora/loras")
            .join(f)
    };
    for (file, seed) in [
        ("lora_a.safetensors", 0x5eed_0007),
        ("lora_a_peft.safetensors", 0x5eed_0008),
    ] {
        let base = std::fs::read(lora(file)).unwrap();
        assert!(load_lora_safetensors(base.clone()), "{file} itself must load");
        let mut rng = Rng(seed);
        let mut t = Tally::default();
        for at in (0..base.len()).step_by(13) {
            t.check(file, load_lora_safetensors, base[..at].to_vec());
        }
        for _ in 0..1500 {
            t.check(file, load_lora_safetensors, mutate(&mut rng, &base));
        }
        for _ in 0..1500 {
            t.check(file, load_lora_safetensors, edit_header(&mut rng, &base));
        }
        t.assert_mixed(file, 3000);
    }
    let pt = std::fs::read(lora("lora_b.pt")).unwrap();
    fuzz_torch_bytes("lora_b.pt", pt, load_lora_pt, 0x5eed_0009).assert_mixed("lora_b.pt", 3000);
}
