//! `TorchRng` against `torch.randn` dumps (tests/fixtures/schedulers/randn.safetensors, made by
//! tools/make_scheduler_goldens.py with torch 2.15 on x86-64): every value bit for bit.

use std::collections::HashMap;

use sd_wgpu::rng::{BatchRng, Mt19937, TorchRng};
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schedulers");

fn load_tensors(file: &str) -> HashMap<String, Vec<f32>> {
    let bytes = std::fs::read(format!("{DIR}/{file}")).expect("fixture file");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()));
            (name, data.collect())
        })
        .collect()
}

fn meta() -> Value {
    let text = std::fs::read_to_string(format!("{DIR}/schedules.json")).expect("schedules.json");
    serde_json::from_str::<Value>(&text).unwrap()["randn"].clone()
}

/// Compares bit patterns (so -0.0 != 0.0 and the test says which value differs).
fn assert_bits_eq(what: &str, ours: &[f32], torch: &[f32]) {
    assert_eq!(ours.len(), torch.len(), "{what}: length");
    for (i, (a, b)) in ours.iter().zip(torch).enumerate() {
        assert!(a.to_bits() == b.to_bits(), "{what}[{i}]: ours {a:e} torch {b:e}");
    }
}

fn numel(shape: &Value) -> usize {
    shape
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .product()
}

fn fnv1a64(values: &[f32]) -> u64 {
    values
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

#[test]
fn mt19937_matches_the_reference_sequence() {
    // The 10000th output of std::mt19937 default-seeded with 5489 is 4123659995 (C++ standard,
    // [rand.predef]).
    let mut mt = Mt19937::new(5489);
    let v = (0..10_000).map(|_| mt.next_u32()).last().unwrap();
    assert_eq!(v, 4_123_659_995);
}

#[test]
fn randn_single_calls_match_torch() {
    let torch = load_tensors("randn.safetensors");
    let meta = meta();
    let cases = meta["single"].as_array().unwrap();
    assert!(cases.len() >= 60);
    for case in cases {
        let key = case["key"].as_str().unwrap();
        let seed = case["seed"].as_u64().unwrap();
        let ours = TorchRng::new(seed).randn(numel(&case["shape"]));
        assert_bits_eq(key, &ours, &torch[key]);
    }
}

#[test]
fn randn_stream_of_calls_matches_torch() {
    let torch = load_tensors("randn.safetensors");
    let meta = meta();
    let shapes = meta["stream"]["shapes"].as_array().unwrap();
    for seed in meta["stream"]["seeds"].as_array().unwrap() {
        let seed = seed.as_u64().unwrap();
        let mut rng = TorchRng::new(seed);
        for (i, shape) in shapes.iter().enumerate() {
            let key = format!("stream/{seed}/{i}");
            assert_bits_eq(&key, &rng.randn(numel(shape)), &torch[&key]);
        }
    }
}

#[test]
fn randn_sd_latents_match_torch() {
    let torch = load_tensors("randn.safetensors");
    for case in meta()["large"].as_array().unwrap() {
        let key = case["key"].as_str().unwrap();
        let ours = TorchRng::new(case["seed"].as_u64().unwrap()).randn(numel(&case["shape"]));
        let want = u64::from_str_radix(case["fnv1a64"].as_str().unwrap(), 16).unwrap();
        if case["full"].as_bool().unwrap() {
            assert_bits_eq(key, &ours, &torch[key]);
        } else {
            let every97: Vec<f32> = ours.iter().step_by(97).copied().collect();
            assert_bits_eq(key, &every97, &torch[&format!("{key}/every97")]);
        }
        assert_eq!(fnv1a64(&ours), want, "{key}: checksum of all values");
    }
}

#[test]
fn seed_uses_low_32_bits_like_torch() {
    assert_bits_eq(
        "2^32 + 5 vs 5",
        &TorchRng::new((1 << 32) + 5).randn(40),
        &TorchRng::new(5).randn(40),
    );
}

#[test]
fn batch_item_i_uses_seed_plus_i() {
    let mut batch = BatchRng::new(u64::MAX, 2);
    let both = batch.randn(2 * 20);
    assert_bits_eq("item 0", &both[..20], &TorchRng::new(u64::MAX).randn(20));
    assert_bits_eq(
        "item 1 (seed wraps to 0)",
        &both[20..],
        &TorchRng::new(0).randn(20),
    );
}
