//! A prompt as CLIP input: 77-token chunks with a weight per position and the places
//! where textual-inversion vectors go. This is A1111's `tokenize_line`:
//!
//! - each parsed piece is tokenized on its own and its tokens carry its weight;
//! - a chunk holds 75 prompt tokens; when it is full and the last comma is at most
//!   [`COMMA_BACKTRACK`] tokens back, the tokens after that comma move to the next chunk
//!   (A1111's default "comma padding backtrack" of 20);
//! - `BREAK` closes the current chunk (an empty one too, as in A1111);
//! - an embedding's vectors are never split: if they do not fit, the chunk is closed first;
//! - each chunk becomes BOS + 75 + EOS, short ones padded with EOS (49407, SD 1.x), and
//!   BOS / EOS / padding have weight 1.0;
//! - an empty prompt is one chunk: BOS, EOS, padding, i.e. the encoding of `""`.
//!
//! Unlike A1111, tokens moved by the comma backtrack take their embedding vectors with
//! them (A1111 leaves the vectors at the old offsets).

use super::prompt::{self, Piece};
use super::{ClipTokenizer, Triggers, BOS, CHUNK_LEN, CHUNK_TOKENS, EOS};
use crate::checkpoint::Embedding;
use crate::Result;

/// How far back (in tokens) the last comma may be for a full chunk to break there.
pub const COMMA_BACKTRACK: usize = 20;

/// Token id placed where an embedding vector goes (A1111 uses 0 too); the text encoder
/// replaces the token embedding at these positions, so the id is never looked up.
pub const PLACEHOLDER_ID: u32 = 0;

/// One embedding vector placed in a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Injection {
    /// Position in the chunk, 1..=75 (0 is BOS).
    pub position: usize,
    /// Index of the embedding in the slice the [`Triggers`] were built from.
    pub embedding: usize,
    /// Row of that embedding's `[n, width]` vectors.
    pub row: usize,
}

impl Injection {
    /// The `[width]` vector this position takes.
    pub fn vector<'a>(&self, embeddings: &'a [Embedding]) -> &'a [f32] {
        let emb = &embeddings[self.embedding];
        &emb.vectors[self.row * emb.width..(self.row + 1) * emb.width]
    }
}

/// One 77-token CLIP input.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// BOS, up to 75 prompt tokens, EOS, EOS padding.
    pub ids: [u32; CHUNK_LEN],
    /// Emphasis weight of each position (1.0 for BOS, EOS and padding).
    pub weights: [f32; CHUNK_LEN],
    /// Positions whose input embedding is an embedding vector instead of `ids[position]`.
    pub injected: Vec<Injection>,
    /// Number of prompt tokens (positions 1..=tokens), vectors included.
    pub tokens: usize,
}

impl Chunk {
    /// BOS then EOS everywhere: the encoding of `""`, used to pad prompts to equal length.
    pub fn empty() -> Self {
        let mut ids = [EOS; CHUNK_LEN];
        ids[0] = BOS;
        Self {
            ids,
            weights: [1.0; CHUNK_LEN],
            injected: Vec::new(),
            tokens: 0,
        }
    }
}

/// A prompt as a sequence of chunks; the text encoder encodes each and concatenates the
/// hidden states along the sequence axis: `[chunks * 77, width]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptChunks {
    pub chunks: Vec<Chunk>,
    /// A1111's token count: 75 per chunk before the last, plus the last chunk's tokens.
    pub token_count: usize,
}

impl PromptChunks {
    /// A1111's counter denominator: the token count rounded up to whole chunks (min 75).
    pub fn token_capacity(&self) -> usize {
        self.token_count.max(1).div_ceil(CHUNK_TOKENS) * CHUNK_TOKENS
    }

    /// Appends empty chunks up to `n` chunks.
    pub fn pad_to(&mut self, n: usize) {
        while self.chunks.len() < n {
            self.chunks.push(Chunk::empty());
        }
    }

    /// All ids, chunk after chunk: `[chunks * 77]`.
    pub fn ids(&self) -> Vec<u32> {
        self.chunks.iter().flat_map(|c| c.ids).collect()
    }

    /// All weights, chunk after chunk: `[chunks * 77]`.
    pub fn weights(&self) -> Vec<f32> {
        self.chunks.iter().flat_map(|c| c.weights).collect()
    }
}

/// Chunks of `prompt` (A1111 syntax, see [`prompt`]).
pub fn chunk_prompt(tokenizer: &ClipTokenizer, triggers: &Triggers, text: &str) -> Result<PromptChunks> {
    let pieces = prompt::parse(text)?;
    let mut builder = Builder::new(tokenizer.comma_id());
    for piece in pieces {
        match piece {
            Piece::Break => builder.close_chunk(false),
            Piece::Text { text, weight } => {
                let tokens = tokenizer.encode(&text);
                builder.push_piece(&tokens, weight as f32, triggers);
            }
        }
    }
    Ok(builder.finish())
}

/// Chunks of a prompt and its negative prompt, padded to the same number of chunks so
/// that both encode to `[chunks * 77, width]`.
pub fn chunk_pair(
    tokenizer: &ClipTokenizer,
    triggers: &Triggers,
    positive: &str,
    negative: &str,
) -> Result<(PromptChunks, PromptChunks)> {
    let mut pos = chunk_prompt(tokenizer, triggers, positive)?;
    let mut neg = chunk_prompt(tokenizer, triggers, negative)?;
    let n = pos.chunks.len().max(neg.chunks.len());
    pos.pad_to(n);
    neg.pad_to(n);
    Ok((pos, neg))
}

/// One prompt position while the chunk is being filled.
#[derive(Debug, Clone, Copy)]
struct Slot {
    id: u32,
    weight: f32,
    /// (embedding index, row) for an embedding vector.
    vector: Option<(usize, usize)>,
}

struct Builder {
    chunks: Vec<Chunk>,
    current: Vec<Slot>,
    /// Index in `current` of the last comma token, if any.
    last_comma: Option<usize>,
    token_count: usize,
    comma: u32,
}

impl Builder {
    fn new(comma: u32) -> Self {
        Self {
            chunks: Vec::new(),
            current: Vec::with_capacity(CHUNK_TOKENS),
            last_comma: None,
            token_count: 0,
            comma,
        }
    }

    fn push_piece(&mut self, tokens: &[u32], weight: f32, triggers: &Triggers) {
        let mut position = 0;
        while position < tokens.len() {
            let token = tokens[position];
            if token == self.comma {
                self.last_comma = Some(self.current.len());
            } else if self.current.len() == CHUNK_TOKENS {
                if let Some(comma) = self.last_comma.filter(|&c| CHUNK_TOKENS - c <= COMMA_BACKTRACK) {
                    let moved = self.current.split_off(comma + 1);
                    self.close_chunk(false);
                    self.current = moved;
                }
            }
            if self.current.len() == CHUNK_TOKENS {
                self.close_chunk(false);
            }
            match triggers.find_at(tokens, position) {
                None => {
                    self.current.push(Slot {
                        id: token,
                        weight,
                        vector: None,
                    });
                    position += 1;
                }
                Some((embedding, covered)) => {
                    let n = triggers.vector_count(embedding);
                    if self.current.len() + n > CHUNK_TOKENS {
                        self.close_chunk(false);
                    }
                    self.current.extend((0..n).map(|row| Slot {
                        id: PLACEHOLDER_ID,
                        weight,
                        vector: Some((embedding, row)),
                    }));
                    position += covered;
                }
            }
        }
    }

    /// Closes the current chunk. A1111 counts 75 tokens for every chunk but the last.
    fn close_chunk(&mut self, is_last: bool) {
        self.token_count += if is_last { self.current.len() } else { CHUNK_TOKENS };
        let mut chunk = Chunk::empty();
        for (i, slot) in self.current.drain(..).enumerate() {
            let position = i + 1;
            chunk.ids[position] = slot.id;
            chunk.weights[position] = slot.weight;
            if let Some((embedding, row)) = slot.vector {
                chunk.injected.push(Injection {
                    position,
                    embedding,
                    row,
                });
            }
            chunk.tokens += 1;
        }
        self.chunks.push(chunk);
        self.last_comma = None;
    }

    fn finish(mut self) -> PromptChunks {
        if !self.current.is_empty() || self.chunks.is_empty() {
            self.close_chunk(true);
        }
        PromptChunks {
            chunks: self.chunks,
            token_count: self.token_count,
        }
    }
}
