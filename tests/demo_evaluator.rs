//! The Rust demo evaluator (tests/support/demo/evaluate.rs) against the Python one
//! (tools/demo/evaluate.py): every image of tests/fixtures/demo/evaluator/
//! (rendered, degraded, edge-case and diffusers-generated scenes, written
//! with the Python answers by tools/demo/evaluator_golden.py) must get the
//! same answer: the same names, and the same measurements up to the 3
//! decimals Python rounds them to.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

// Shared with tests/demo.rs, which uses the parts (accuracy tables, captions) this file does not.
#[allow(dead_code, unused_imports)]
#[path = "support/demo/mod.rs"]
mod demo;
use demo::{measure, Measured, Spec};
use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/demo/evaluator")
}

/// Python's answer matches ours: names exactly, numbers within the rounding to 3 decimals.
fn compare(py: &Value, rs: &Measured) -> Result<(), String> {
    let name = |key: &str| py[key].as_str().map(str::to_string);
    if name("background").as_deref() != Some(rs.background.as_str()) {
        return Err(format!(
            "background: python {}, rust {}",
            py["background"], rs.background
        ));
    }
    let Some(s) = &rs.shape else {
        return match py["colour"].is_null() {
            true => Ok(()),
            false => Err(format!("python found a shape ({}), rust none", py["shape"])),
        };
    };
    if py["colour"].is_null() {
        return Err(format!("rust found a shape ({s:?}), python none"));
    }
    let names = [
        ("colour", s.colour.as_str()),
        ("shape", s.shape),
        ("size", s.size),
        ("position", s.position.as_str()),
    ];
    for (key, ours) in names {
        if name(key).as_deref() != Some(ours) {
            return Err(format!("{key}: python {}, rust {ours}", py[key]));
        }
    }
    let numbers = [
        ("fill", &py["fill"], s.fill),
        ("top", &py["top"], s.top),
        ("extent", &py["extent"], s.extent),
        ("centre x", &py["centre"][0], s.centre.0),
        ("centre y", &py["centre"][1], s.centre.1),
    ];
    for (key, theirs, ours) in numbers {
        let theirs = theirs.as_f64().ok_or(format!("{key} missing in the golden"))?;
        if (theirs - ours).abs() > 5e-4 + 1e-12 {
            return Err(format!("{key}: python {theirs}, rust {ours}"));
        }
    }
    Ok(())
}

#[test]
fn rust_evaluator_answers_as_the_python_one() {
    let text = std::fs::read_to_string(fixture().join("cases.json")).unwrap();
    let golden: Value = serde_json::from_str(&text).unwrap();
    let demo = Spec::load(Spec::default_path()).unwrap();
    let (teal_name, teal) = golden["palettes"]["teal"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    let rgb: Vec<u8> = teal
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u8)
        .collect();
    let teal_spec = demo.with_colour(teal_name, [rgb[0], rgb[1], rgb[2]]);

    let mut strips: HashMap<String, image::RgbImage> = HashMap::new();
    let mut per_strip: HashMap<String, usize> = HashMap::new();
    let mut failures = Vec::new();
    let cases = golden["cases"].as_array().unwrap();
    for case in cases {
        let strip = case["strip"].as_str().unwrap();
        let (index, side) = (
            case["index"].as_u64().unwrap() as usize,
            case["side"].as_u64().unwrap() as usize,
        );
        let pixels = strips
            .entry(strip.to_string())
            .or_insert_with(|| image::open(fixture().join(strip)).unwrap().to_rgb8());
        assert_eq!(pixels.width() as usize, side, "{strip}: width");
        let bytes = side * side * 3;
        let img = &pixels.as_raw()[index * bytes..(index + 1) * bytes]; // [S, S, 3]
        let spec = match case["palette"].as_str().unwrap() {
            "demo" => &demo,
            "teal" => &teal_spec,
            p => panic!("unknown palette {p}"),
        };
        if let Err(e) = compare(&case["measured"], &measure(img, side, spec)) {
            failures.push(format!("{strip} #{index} ({}): {e}", case["about"]));
        }
        *per_strip.entry(strip.to_string()).or_default() += 1;
    }
    let mut counts: Vec<_> = per_strip.into_iter().collect();
    counts.sort();
    println!("{} images compared: {counts:?}", cases.len());
    assert!(
        cases.len() >= 200,
        "expected a few hundred cases, found {}",
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
