//! What a demo-model image shows, from plain pixel statistics: the Rust twin
//! of `measure()` in `tools/demo/evaluate.py` (its docstring describes the
//! algorithm; tests/demo_evaluator.rs checks both give the same answers on
//! a few hundred images). Thresholds come from [`Spec`].
//!
//! Every intermediate is exact or computed as numpy computes it, so the
//! answers match bit for bit: pixel values and medians are integers, squared
//! distances are exact in f64 and `sqrt` is correctly rounded in both, the
//! triangle test sums multiples of 1/2.

use std::collections::VecDeque;

use super::spec::{Attributes, Spec, ATTRIBUTES};

/// The evaluator's answer: the background always, the rest when a shape was found.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub background: String,
    pub shape: Option<ShapeFound>,
}

/// A shape the evaluator found, with the raw measurements behind the names.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeFound {
    pub colour: String,
    /// `circle`, `square` or `triangle`.
    pub shape: &'static str,
    /// `small` or `large`.
    pub size: &'static str,
    pub position: String,
    /// Area / bounding-box area.
    pub fill: f64,
    /// Share of the area above the box's middle line.
    pub top: f64,
    /// Larger box side / image side.
    pub extent: f64,
    /// Box centre (x, y), fractions of the image side.
    pub centre: (f64, f64),
}

impl Measured {
    /// The measured value of one of [`ATTRIBUTES`]; `None` when no shape was found
    /// (the background is always measured).
    pub fn get(&self, attribute: &str) -> Option<&str> {
        if attribute == "background" {
            return Some(&self.background);
        }
        let s = self.shape.as_ref()?;
        Some(match attribute {
            "colour" => &s.colour,
            "shape" => s.shape,
            "size" => s.size,
            "position" => &s.position,
            _ => panic!("unknown attribute {attribute:?}"),
        })
    }

    /// Whether the image shows all of `truth`.
    pub fn matches(&self, truth: &Attributes) -> bool {
        ATTRIBUTES.iter().all(|a| self.get(a) == Some(truth.get(a)))
    }
}

/// Measures an RGB image `rgb [S, S, 3]` (row-major bytes) of side `side`.
pub fn measure(rgb: &[u8], side: usize, spec: &Spec) -> Measured {
    assert_eq!(
        rgb.len(),
        side * side * 3,
        "measure: expected a {side}x{side} RGB image"
    );
    let pixel = |i: usize| [rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]];
    let n = side * side;

    // 1. Background: the lower median of the border ring (Python's round: halves to even).
    let ring = ((side as f64 * spec.border_fraction).round_ties_even() as usize).max(1);
    let in_ring = |i: usize| {
        let (y, x) = (i / side, i % side);
        y < ring || y + ring >= side || x < ring || x + ring >= side
    };
    let bg = lower_median((0..n).filter(|&i| in_ring(i)).map(pixel));
    let background = nearest_colour(bg, &spec.palette);
    let no_shape = Measured {
        background: background.clone(),
        shape: None,
    };
    let dist_bg: Vec<f64> = (0..n).map(|i| distance(pixel(i), bg)).collect(); // [S*S]

    // 2. Rough foreground, and its median as the rough shape colour.
    let rough: Vec<usize> = (0..n).filter(|&i| dist_bg[i] > spec.fg_distance).collect();
    if rough.is_empty() {
        return no_shape;
    }
    let fg = lower_median(rough.iter().map(|&i| pixel(i)));

    // 3. Shape pixels: nearer the shape colour than the background (the mid-point boundary).
    let nearer_fg: Vec<bool> = (0..n).map(|i| distance(pixel(i), fg) < dist_bg[i]).collect();
    let shape = largest_component(&nearer_fg, side); // raster order
    let area = shape.len();
    if (area as f64) < spec.min_area * side as f64 * side as f64 {
        return no_shape;
    }

    // 4. Geometry of the bounding box.
    let (xs, ys) = (shape.iter().map(|&i| i % side), shape.iter().map(|&i| i / side));
    let (x0, x1) = (xs.clone().min().unwrap(), xs.max().unwrap());
    let (y0, y1) = (ys.clone().min().unwrap(), ys.clone().max().unwrap());
    let (w, h) = (x1 - x0 + 1, y1 - y0 + 1);
    let fill = area as f64 / (w * h) as f64;
    // Share of the area above the box's middle line: 1/4 for an apex-up triangle, 1/2 for a
    // circle or a square. Unlike the fill ratio it survives blurred corners.
    let middle = y0 as f64 + h as f64 / 2.0;
    let top = ys.map(|y| (middle - y as f64).clamp(0.0, 1.0)).sum::<f64>() / area as f64;
    let extent = w.max(h) as f64 / side as f64;
    let cx = (x0 + x1 + 1) as f64 / 2.0 / side as f64;
    let cy = (y0 + y1 + 1) as f64 / 2.0 / side as f64;
    let kind = if top < spec.top_triangle {
        "triangle"
    } else if fill >= spec.fill_square {
        "square"
    } else {
        "circle"
    };
    let third = |v: f64| {
        if v < spec.split_low {
            0
        } else if v > spec.split_high {
            2
        } else {
            1
        }
    };
    let cell = [third(cx), third(cy)];
    let position = spec
        .positions
        .iter()
        .find(|(_, cr)| *cr == cell)
        .map(|(name, _)| name.clone())
        .expect("Spec::check guarantees a name for every grid cell");

    // Colour from the quarter of the shape's pixels farthest from the background: the others
    // are more likely blends of the two colours along the edge. The sort is stable, so ties
    // keep raster order, as numpy's stable argsort of -d does.
    let mut by_distance = shape.clone();
    by_distance.sort_by(|&a, &b| dist_bg[b].total_cmp(&dist_bg[a]));
    let core = &by_distance[..(area / 4).max(1)];
    let colour = nearest_colour(lower_median(core.iter().map(|&i| pixel(i))), &spec.palette);

    Measured {
        background,
        shape: Some(ShapeFound {
            colour,
            shape: kind,
            size: if extent >= spec.large_extent {
                "large"
            } else {
                "small"
            },
            position,
            fill,
            top,
            extent,
            centre: (cx, cy),
        }),
    }
}

/// Per-channel lower median: the element at index (N - 1) / 2 of each sorted channel.
fn lower_median(pixels: impl Iterator<Item = [u8; 3]>) -> [u8; 3] {
    let mut channels: [Vec<u8>; 3] = Default::default();
    for p in pixels {
        for c in 0..3 {
            channels[c].push(p[c]);
        }
    }
    channels.map(|mut v| {
        v.sort_unstable();
        v[(v.len() - 1) / 2]
    })
}

/// Squared Euclidean RGB distance (exact).
fn squared_distance(a: [u8; 3], b: [u8; 3]) -> i32 {
    (0..3).map(|c| (a[c] as i32 - b[c] as i32).pow(2)).sum()
}

/// Euclidean RGB distance.
fn distance(a: [u8; 3], b: [u8; 3]) -> f64 {
    (squared_distance(a, b) as f64).sqrt()
}

/// The palette name nearest to `rgb`; ties go to the first in palette order (numpy's argmin).
fn nearest_colour(rgb: [u8; 3], palette: &[(String, [u8; 3])]) -> String {
    let mut best = (0, i32::MAX);
    for (k, (_, p)) in palette.iter().enumerate() {
        let d = squared_distance(rgb, *p);
        if d < best.1 {
            best = (k, d);
        }
    }
    palette[best.0].0.clone()
}

/// Pixel indices (raster order) of the largest 4-connected component of
/// `mask [S*S]`; the first found, in raster order of its first pixel, wins ties.
fn largest_component(mask: &[bool], side: usize) -> Vec<usize> {
    let mut labels = vec![0u32; mask.len()]; // 0 = unlabelled
    let (mut best, mut best_size, mut label) = (0, 0, 0);
    let mut queue = VecDeque::new();
    for start in 0..mask.len() {
        if !mask[start] || labels[start] != 0 {
            continue;
        }
        label += 1;
        labels[start] = label;
        queue.push_back(start);
        let mut size = 0;
        while let Some(i) = queue.pop_front() {
            size += 1;
            let (y, x) = (i / side, i % side);
            let up = (y > 0).then(|| i - side);
            let down = (y + 1 < side).then_some(i + side);
            let left = (x > 0).then(|| i - 1);
            let right = (x + 1 < side).then_some(i + 1);
            for j in [up, down, left, right].into_iter().flatten() {
                if mask[j] && labels[j] == 0 {
                    labels[j] = label;
                    queue.push_back(j);
                }
            }
        }
        if size > best_size {
            (best, best_size) = (label, size);
        }
    }
    if best == 0 {
        return Vec::new();
    }
    (0..mask.len()).filter(|&i| labels[i] == best).collect()
}

/// Accuracy per attribute over (truth, measured) pairs, and of all five at once.
#[derive(Debug, Clone)]
pub struct Accuracy {
    /// In [`ATTRIBUTES`] order, then `"all"`.
    pub rows: Vec<(&'static str, f64)>,
}

impl Accuracy {
    pub fn of(results: &[(Attributes, Measured)]) -> Accuracy {
        let n = results.len();
        let share = |hits: usize| if n == 0 { 0.0 } else { hits as f64 / n as f64 };
        let mut rows: Vec<(&'static str, f64)> = ATTRIBUTES
            .iter()
            .map(|&a| {
                (
                    a,
                    share(results.iter().filter(|(t, m)| m.get(a) == Some(t.get(a))).count()),
                )
            })
            .collect();
        rows.push(("all", share(results.iter().filter(|(t, m)| m.matches(t)).count())));
        Accuracy { rows }
    }

    pub fn get(&self, attribute: &str) -> f64 {
        self.rows
            .iter()
            .find(|(a, _)| *a == attribute)
            .map(|&(_, v)| v)
            .unwrap()
    }

    /// The attributes below their targets in `spec`, as "colour 83.3% < 90%".
    pub fn misses(&self, spec: &Spec) -> Vec<String> {
        spec.targets
            .iter()
            .filter(|(a, t)| self.get(a) < *t)
            .map(|(a, t)| format!("{a} {:.1}% < {:.0}%", 100.0 * self.get(a), 100.0 * t))
            .collect()
    }

    /// One markdown table row: `| label | 91.7% | ... |` (header: [`Accuracy::header`]).
    pub fn row(&self, label: &str) -> String {
        let cells: Vec<String> = self
            .rows
            .iter()
            .map(|(_, v)| format!("{:.1}%", 100.0 * v))
            .collect();
        format!("| {label} | {} |", cells.join(" | "))
    }

    pub fn header(first: &str) -> String {
        let names: Vec<&str> = ATTRIBUTES.iter().copied().chain(["all"]).collect();
        format!(
            "| {first} | {} |\n|---|{}",
            names.join(" | "),
            "---|".repeat(names.len())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec::load(Spec::default_path()).unwrap()
    }

    /// A `side`-pixel image of `bg` with the box `[x0, x1) x [y0, y1)` in `fg`.
    fn boxed(
        side: usize,
        bg: [u8; 3],
        fg: [u8; 3],
        (x0, x1, y0, y1): (usize, usize, usize, usize),
    ) -> Vec<u8> {
        (0..side * side)
            .flat_map(|i| {
                let (y, x) = (i / side, i % side);
                if (x0..x1).contains(&x) && (y0..y1).contains(&y) {
                    fg
                } else {
                    bg
                }
            })
            .collect()
    }

    #[test]
    fn a_square_top_left() {
        let img = boxed(64, [0, 0, 255], [255, 255, 0], (4, 30, 6, 32));
        let m = measure(&img, 64, &spec());
        assert_eq!(m.background, "blue");
        let s = m.shape.unwrap();
        assert_eq!(
            (s.colour.as_str(), s.shape, s.size),
            ("yellow", "square", "large")
        );
        assert_eq!(s.position, "top left");
        assert_eq!((s.fill, s.top, s.extent), (1.0, 0.5, 26.0 / 64.0));
    }

    #[test]
    fn flat_and_tiny_images_have_no_shape() {
        let flat = boxed(64, [250, 5, 5], [0, 0, 0], (0, 0, 0, 0));
        assert_eq!(measure(&flat, 64, &spec()).background, "red");
        assert!(measure(&flat, 64, &spec()).shape.is_none());
        // 7x8 = 56 pixels < 0.015 * 64^2 = 61.44.
        let tiny = boxed(64, [0, 0, 0], [255, 255, 255], (20, 27, 20, 28));
        assert!(measure(&tiny, 64, &spec()).shape.is_none());
    }

    #[test]
    fn colour_ties_go_to_the_first_palette_entry() {
        // (255, 64, 0) is 64 from red and from orange; red comes first.
        let palette = spec().palette;
        assert_eq!(nearest_colour([255, 64, 0], &palette), "red");
        assert_eq!(nearest_colour([255, 65, 0], &palette), "orange");
    }

    #[test]
    fn equal_components_keep_the_first_found() {
        let mask: Vec<bool> = (0..16).map(|i| [1, 2, 13, 14].contains(&i)).collect();
        assert_eq!(largest_component(&mask, 4), vec![1, 2]);
        assert!(largest_component(&[false; 9], 3).is_empty());
    }
}
