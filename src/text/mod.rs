//! Text to text-encoder input: CLIP tokenizer, A1111 prompt syntax, long-prompt chunks,
//! textual-inversion triggers, and the emphasis rule applied to the encoder's output.
//!
//! ```text
//! prompt ── prompt::parse ──> weighted pieces, BREAKs
//!        ── ClipTokenizer::encode (per piece) ──> token ids
//!        ── chunk_prompt (75-token chunks, comma backtrack, triggers) ──> PromptChunks
//! text encoder: for each chunk, token embeddings of `ids` with `injected` positions
//!        replaced by embedding vectors ──> [77, width]; chunks concatenated
//!        ──> [chunks * 77, width] ── apply_emphasis(weights) ──> UNet context
//! ```
//!
//! What the text encoder receives is a [`PromptChunks`]: per chunk, 77 ids (BOS, up to 75
//! prompt tokens, EOS, EOS padding), 77 weights, and a list of [`Injection`]s
//! `(position, embedding index, row)` saying which positions take row `row` of an
//! [`Embedding`](crate::checkpoint::Embedding)'s `[n, width]` vectors instead of the token
//! embedding of `ids[position]` (which is [`PLACEHOLDER_ID`] there). Position embeddings
//! are added as usual. The prompt and negative prompt go through [`chunk_pair`], which pads
//! the shorter one with empty chunks (the encoding of `""`) so both have the same length.
//!
//! Tokenizer fidelity: the ids equal OpenAI CLIP's tokenizer (with ftfy) on a golden set
//! of ~2500 prompts (`tests/tokenizer_golden.rs`), except for the documented classes:
//! mojibake that ftfy would repair (see [`clean`]), and control-token text, which stays
//! text here (see [`tokenizer`]).

pub mod chunks;
pub mod clean;
pub mod emphasis;
mod html;
pub mod prompt;
pub mod tokenizer;
pub mod triggers;

pub use chunks::{chunk_pair, chunk_prompt, Chunk, Injection, PromptChunks, PLACEHOLDER_ID};
pub use emphasis::apply_emphasis;
pub use tokenizer::ClipTokenizer;
pub use triggers::Triggers;

/// `<|startoftext|>`.
pub const BOS: u32 = 49406;
/// `<|endoftext|>`, also the padding token of SD 1.x.
pub const EOS: u32 = 49407;
/// Prompt tokens per chunk.
pub const CHUNK_TOKENS: usize = 75;
/// Tokens per text-encoder input: BOS + 75 + EOS.
pub const CHUNK_LEN: usize = CHUNK_TOKENS + 2;
