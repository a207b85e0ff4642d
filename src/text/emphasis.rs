//! Emphasis applied to the text encoder's output, A1111's default ("Original") rule.
//!
//! For each 77-token chunk separately (A1111 encodes and weights one chunk at a time):
//! multiply each position's hidden state by its weight, then scale the whole chunk so
//! that the mean of all its values equals the mean before weighting. The rescale keeps
//! the overall magnitude the UNet sees; the weights shift emphasis between tokens.
//!
//! ComfyUI's default differs: it interpolates each position between the encoding of the
//! empty prompt and the prompt's encoding (`empty + (z - empty) * w`), which needs a
//! second text-encoder pass and gives different images for the same weights.

use super::CHUNK_LEN;

/// Applies per-position weights to hidden states in place.
///
/// `hidden` is `[chunks * 77, width]` row-major (chunks concatenated along the sequence
/// axis), `weights` is `[chunks * 77]` (from [`PromptChunks::weights`](super::PromptChunks::weights)).
/// A chunk whose weights are all 1.0 is left untouched; one whose weighted mean is zero
/// (which A1111 would turn into NaN) is left weighted but not rescaled.
pub fn apply_emphasis(hidden: &mut [f32], weights: &[f32], width: usize) {
    assert_eq!(
        weights.len() % CHUNK_LEN,
        0,
        "weights must cover whole 77-token chunks"
    );
    assert_eq!(
        hidden.len(),
        weights.len() * width,
        "hidden must be [chunks * 77, width]"
    );
    // [77, width] and [77] per chunk
    for (chunk, chunk_weights) in hidden
        .chunks_mut(CHUNK_LEN * width)
        .zip(weights.chunks(CHUNK_LEN))
    {
        if chunk_weights.iter().all(|&w| w == 1.0) {
            continue;
        }
        let before = mean(chunk);
        for (row, &w) in chunk.chunks_mut(width).zip(chunk_weights) {
            row.iter_mut().for_each(|x| *x *= w);
        }
        let after = mean(chunk);
        if after != 0.0 && after.is_finite() {
            let scale = (before / after) as f32;
            chunk.iter_mut().for_each(|x| *x *= scale);
        }
    }
}

/// Mean accumulated in f64 (77 * 768 values).
fn mean(values: &[f32]) -> f64 {
    values.iter().map(|&x| x as f64).sum::<f64>() / values.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row [1, 3] (mean 2); row 1 weighted 2 becomes [2, 6], so the weighted mean is
    /// (76 * 4 + 8) / 154 = 312 / 154 and the rescale factor is 2 * 154 / 312 = 77 / 78.
    #[test]
    fn hand_computed_single_chunk() {
        let width = 2;
        let mut hidden: Vec<f32> = (0..CHUNK_LEN).flat_map(|_| [1.0, 3.0]).collect(); // [77, 2]
        let mut weights = vec![1.0f32; CHUNK_LEN];
        weights[1] = 2.0;
        apply_emphasis(&mut hidden, &weights, width);
        let k = 77.0 / 78.0;
        let close = |a: f32, b: f64| (a as f64 - b).abs() < 1e-6;
        assert!(
            close(hidden[2], 2.0 * k) && close(hidden[3], 6.0 * k),
            "{:?}",
            &hidden[2..4]
        );
        for row in [0, 2, 40, 76] {
            assert!(close(hidden[row * 2], k) && close(hidden[row * 2 + 1], 3.0 * k));
        }
        assert!((mean(&hidden) - 2.0).abs() < 1e-6, "mean is restored");
    }

    /// Two chunks are rescaled independently: the unweighted second chunk is unchanged.
    #[test]
    fn chunks_are_independent() {
        let width = 1;
        let mut hidden: Vec<f32> = (0..2 * CHUNK_LEN).map(|i| 1.0 + (i % 5) as f32).collect(); // [154, 1]
        let original = hidden.clone();
        let mut weights = vec![1.0f32; 2 * CHUNK_LEN];
        weights[3] = 0.5;
        apply_emphasis(&mut hidden, &weights, width);
        assert_eq!(hidden[CHUNK_LEN..], original[CHUNK_LEN..]);
        assert!((mean(&hidden[..CHUNK_LEN]) - mean(&original[..CHUNK_LEN])).abs() < 1e-6);
        assert!(hidden[3] < original[3] && hidden[4] > original[4]);
    }

    #[test]
    fn zero_mean_is_not_divided() {
        let mut hidden = vec![0.0f32; CHUNK_LEN]; // [77, 1]
        let mut weights = vec![1.0f32; CHUNK_LEN];
        weights[5] = 1.5;
        apply_emphasis(&mut hidden, &weights, 1);
        assert!(hidden.iter().all(|&x| x == 0.0));
    }
}
