//! `tools/demo/eval_spec.json`: the evaluator's thresholds, palette and grid
//! positions, the accuracy targets and the held-out CI captions, written by
//! `tools/demo/evaluate.py spec`. The Rust evaluator reads its numbers from
//! this file rather than copying them, so the two evaluators cannot drift.

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use sd_wgpu::{Error, Result};

/// The five attributes a scene has and the evaluator measures, in the order
/// of `data.ATTRIBUTES`.
pub const ATTRIBUTES: [&str; 5] = ["colour", "shape", "background", "size", "position"];

/// The evaluator's settings and the CI evaluation set. Fractions are of the image side.
#[derive(Debug, Clone, Deserialize)]
pub struct Spec {
    /// Colour name -> RGB, in file order: a measured colour equally near two
    /// entries is named by the first.
    #[serde(deserialize_with = "ordered")]
    pub palette: Vec<(String, [u8; 3])>,
    /// Width of the border ring the background is read from.
    pub border_fraction: f64,
    /// RGB distance from the background beyond which a pixel is rough foreground.
    pub fg_distance: f64,
    /// Smallest shape area, as a fraction of the image area.
    pub min_area: f64,
    /// Bounding-box extent at or above which a shape is large.
    pub large_extent: f64,
    /// Box-centre coordinates below `split_low` are left/top, above `split_high` right/bottom.
    pub split_low: f64,
    pub split_high: f64,
    /// Fill ratio at or above which a (non-triangle) shape is a square.
    pub fill_square: f64,
    /// Share of the area above the box's middle line below which a shape is a triangle.
    pub top_triangle: f64,
    /// Position name -> (column, row) on the 3x3 grid, in file order.
    #[serde(deserialize_with = "ordered")]
    pub positions: Vec<(String, [usize; 2])>,
    /// Side of the generated images, pixels.
    pub image_side: usize,
    pub generation: GenerationSpec,
    /// Attribute -> the accuracy it must reach, in file order.
    #[serde(deserialize_with = "ordered")]
    pub targets: Vec<(String, f64)>,
    pub captions: Vec<Caption>,
}

/// How the CI captions are generated.
#[derive(Debug, Clone, Deserialize)]
pub struct GenerationSpec {
    pub steps: usize,
    pub guidance_scale: f32,
}

/// A held-out caption, its generation seed and what the image should show.
#[derive(Debug, Clone, Deserialize)]
pub struct Caption {
    pub caption: String,
    pub seed: u64,
    #[serde(flatten)]
    pub truth: Attributes,
}

/// What a scene shows, as names (`"red"`, `"circle"`, `"large"`, `"top left"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attributes {
    pub colour: String,
    pub shape: String,
    pub background: String,
    pub size: String,
    pub position: String,
}

impl Attributes {
    /// The value of one of [`ATTRIBUTES`].
    pub fn get(&self, attribute: &str) -> &str {
        match attribute {
            "colour" => &self.colour,
            "shape" => &self.shape,
            "background" => &self.background,
            "size" => &self.size,
            "position" => &self.position,
            _ => panic!("unknown attribute {attribute:?}"),
        }
    }
}

impl Spec {
    /// The repository's `tools/demo/eval_spec.json`.
    pub fn default_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/demo/eval_spec.json")
    }

    pub fn load(path: impl AsRef<Path>) -> Result<Spec> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path.display().to_string(), e))?;
        Spec::from_json(&text, path)
    }

    /// Parses and checks a spec; `origin` names where `text` came from in errors.
    pub fn from_json(text: &str, origin: impl AsRef<Path>) -> Result<Spec> {
        let origin = origin.as_ref();
        let spec: Spec = serde_json::from_str(text)
            .map_err(|e| Error::bad_file(origin, format!("not an evaluator spec: {e}")))?;
        spec.check().map_err(|msg| Error::bad_file(origin, msg))?;
        Ok(spec)
    }

    /// The same spec with one more palette colour (e.g. a textual-inversion
    /// concept's), named after the others so it loses ties to them.
    pub fn with_colour(&self, name: &str, rgb: [u8; 3]) -> Spec {
        let mut spec = self.clone();
        spec.palette.push((name.to_string(), rgb));
        spec
    }

    /// The target of an attribute, if it has one.
    pub fn target(&self, attribute: &str) -> Option<f64> {
        self.targets.iter().find(|(a, _)| a == attribute).map(|&(_, t)| t)
    }

    /// What the evaluator relies on: a palette, one name per grid cell, targets of known attributes.
    fn check(&self) -> std::result::Result<(), String> {
        if self.palette.is_empty() {
            return Err("the palette is empty".into());
        }
        for col in 0..3 {
            for row in 0..3 {
                if !self.positions.iter().any(|(_, cr)| *cr == [col, row]) {
                    return Err(format!(
                        "no position is named for grid cell (column {col}, row {row})"
                    ));
                }
            }
        }
        if let Some((a, _)) = self
            .targets
            .iter()
            .find(|(a, _)| !ATTRIBUTES.contains(&a.as_str()))
        {
            return Err(format!("target for {a:?}, expected one of {ATTRIBUTES:?}"));
        }
        if self.image_side == 0 {
            return Err("image_side is 0".into());
        }
        Ok(())
    }
}

/// A JSON object read as `(key, value)` pairs in file order (serde_json's own
/// maps sort their keys, and the palette's order decides ties).
fn ordered<'de, D, T>(de: D) -> std::result::Result<Vec<(String, T)>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Pairs<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for Pairs<T> {
        type Value = Vec<(String, T)>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(pair) = map.next_entry()? {
                out.push(pair);
            }
            Ok(out)
        }
    }

    de.deserialize_map(Pairs(PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_repository_spec_in_file_order() {
        let spec = Spec::load(Spec::default_path()).unwrap();
        assert_eq!(spec.palette[0], ("red".to_string(), [255, 0, 0]));
        assert_eq!(spec.palette.last().unwrap().0, "black");
        assert_eq!(spec.positions[0], ("top left".to_string(), [0, 0]));
        assert_eq!(spec.target("colour"), Some(0.9));
        assert_eq!(spec.captions.len(), 240);
        assert_eq!(spec.captions[0].truth.get("position"), "centre");
    }

    #[test]
    fn bad_specs_name_the_file_and_the_problem() {
        let good = std::fs::read_to_string(Spec::default_path()).unwrap();
        let e = Spec::from_json("{}", "x.json").unwrap_err().to_string();
        assert!(e.contains("x.json") && e.contains("missing field"), "{e}");
        let no_centre = good.replace("\"centre\": [1, 1]", "\"middle\": [1, 2]");
        let e = Spec::from_json(&no_centre, "y.json").unwrap_err().to_string();
        assert!(e.contains("y.json") && e.contains("column 1, row 1"), "{e}");
    }
}
