//! Prompt to chunks: A1111's chunking rules (75-token chunks, comma backtrack, BREAK),
//! emphasis weights per position, textual-inversion vectors, negative-prompt padding.
//!
//! Single-token words keep the arithmetic visible: `cat` is one token (2368), `,` is
//! `,</w>` (267), so "cat cat, cat" is 4 tokens.

use sd_wgpu::checkpoint::Embedding;
use sd_wgpu::text::{
    chunk_pair, chunk_prompt, Chunk, ClipTokenizer, Injection, PromptChunks, Triggers, BOS, CHUNK_LEN, EOS,
    PLACEHOLDER_ID,
};

const CAT: u32 = 2368;
const COMMA: u32 = 267;

fn chunks(prompt: &str) -> PromptChunks {
    chunk_prompt(&ClipTokenizer::embedded(), &Triggers::none(), prompt).unwrap()
}

fn cats(n: usize) -> String {
    vec!["cat"; n].join(" ")
}

fn embedding(trigger: &str, n: usize) -> Embedding {
    Embedding {
        trigger: trigger.into(),
        n,
        width: 768,
        vectors: vec![0.25; n * 768],
    }
}

/// Asserts BOS, `tokens` prompt tokens, EOS, then EOS padding with weight 1.
fn assert_frame(chunk: &Chunk, tokens: usize) {
    assert_eq!(chunk.tokens, tokens);
    assert_eq!(chunk.ids[0], BOS);
    assert!(
        chunk.ids[tokens + 1..].iter().all(|&id| id == EOS),
        "{:?}",
        chunk.ids
    );
    assert_eq!(chunk.weights[0], 1.0);
    assert!(chunk.weights[tokens + 1..].iter().all(|&w| w == 1.0));
}

#[test]
fn short_prompt_with_emphasis() {
    let p = chunks("a (cat:1.5) [cat]");
    assert_eq!(p.chunks.len(), 1);
    assert_eq!((p.token_count, p.token_capacity()), (3, 75));
    let c = &p.chunks[0];
    assert_frame(c, 3);
    assert_eq!(c.ids[..5], [BOS, 320, CAT, CAT, EOS]);
    assert_eq!(c.weights[..5], [1.0, 1.0, 1.5, (1.0 / 1.1) as f32, 1.0]);
}

#[test]
fn empty_prompt_is_the_encoding_of_empty_text() {
    for prompt in ["", "   ", "()"] {
        let p = chunks(prompt);
        assert_eq!(p.chunks, [Chunk::empty()], "{prompt:?}");
        assert_eq!((p.token_count, p.token_capacity()), (0, 75));
    }
}

#[test]
fn long_prompt_splits_every_75_tokens() {
    let p = chunks(&cats(160));
    assert_eq!(p.chunks.len(), 3);
    assert_eq!((p.token_count, p.token_capacity()), (160, 225));
    assert_frame(&p.chunks[0], 75);
    assert_frame(&p.chunks[1], 75);
    assert_frame(&p.chunks[2], 10);
    assert!(p.chunks[0].ids[1..76].iter().all(|&id| id == CAT));
    assert_eq!(p.ids().len(), 3 * CHUNK_LEN);
    assert_eq!(p.weights().len(), 3 * CHUNK_LEN);
}

#[test]
fn exactly_75_tokens_is_one_chunk() {
    let p = chunks(&cats(75));
    assert_eq!(p.chunks.len(), 1);
    assert_eq!((p.token_count, p.token_capacity()), (75, 75));
    assert_eq!(p.chunks[0].ids[76], EOS);
}

#[test]
fn comma_backtrack_moves_the_words_after_a_near_comma() {
    // 70 cats, comma (index 70), 10 cats: when the 76th token arrives the chunk is full
    // and the comma is 5 back, so the 4 cats after it move to chunk 2.
    let p = chunks(&format!("{}, {}", cats(70), cats(10)));
    assert_eq!(p.chunks.len(), 2);
    assert_frame(&p.chunks[0], 71);
    assert_eq!(p.chunks[0].ids[71], COMMA);
    assert_frame(&p.chunks[1], 10);
    assert_eq!(p.token_count, 75 + 10);
}

#[test]
fn comma_backtrack_limit_is_20_tokens() {
    // Comma at index 55: 75 - 55 = 20, close enough.
    let p = chunks(&format!("{}, {}", cats(55), cats(30)));
    assert_frame(&p.chunks[0], 56);
    assert_frame(&p.chunks[1], 30);
    // Comma at index 54: 21 back, too far: the chunk is cut at 75.
    let p = chunks(&format!("{}, {}", cats(54), cats(30)));
    assert_frame(&p.chunks[0], 75);
    assert_eq!(p.chunks[0].ids[55], COMMA);
    assert_frame(&p.chunks[1], 10);
}

#[test]
fn comma_as_76th_token_starts_the_next_chunk() {
    let p = chunks(&format!("{}, cat", cats(75)));
    assert_frame(&p.chunks[0], 75);
    assert_frame(&p.chunks[1], 2);
    assert_eq!(p.chunks[1].ids[1..3], [COMMA, CAT]);
}

#[test]
fn break_starts_a_new_chunk() {
    let p = chunks("cat BREAK (cat:2)");
    assert_eq!(p.chunks.len(), 2);
    assert_frame(&p.chunks[0], 1);
    assert_frame(&p.chunks[1], 1);
    assert_eq!(p.chunks[1].weights[1], 2.0);
    assert_eq!((p.token_count, p.token_capacity()), (76, 150));
    // As in A1111: a leading BREAK leaves an empty first chunk, a trailing one adds nothing.
    assert_eq!(chunks("BREAK cat").chunks[0], Chunk::empty());
    assert_eq!(chunks("cat BREAK").chunks.len(), 1);
}

#[test]
fn embedding_takes_n_positions_with_the_piece_weight() {
    let tok = ClipTokenizer::embedded();
    let embs = [embedding("<my-style>", 3)];
    let triggers = Triggers::new(&tok, &embs, 768).unwrap();
    let p = chunk_prompt(&tok, &triggers, "a cat, (<my-style>:1.2) cat").unwrap();
    let c = &p.chunks[0];
    assert_frame(c, 7);
    assert_eq!(
        c.ids[1..8],
        [
            320,
            CAT,
            COMMA,
            PLACEHOLDER_ID,
            PLACEHOLDER_ID,
            PLACEHOLDER_ID,
            CAT
        ]
    );
    assert_eq!(c.weights[4..7], [1.2; 3]);
    let want: Vec<Injection> = (0..3)
        .map(|row| Injection {
            position: 4 + row,
            embedding: 0,
            row,
        })
        .collect();
    assert_eq!(c.injected, want);
}

#[test]
fn injection_points_at_its_vector_row() {
    let tok = ClipTokenizer::embedded();
    let mut emb = embedding("<two-rows>", 2);
    emb.vectors[768..].fill(-1.0);
    let embs = [emb];
    let triggers = Triggers::new(&tok, &embs, 768).unwrap();
    let p = chunk_prompt(&tok, &triggers, "<two-rows>").unwrap();
    let [first, second] = p.chunks[0].injected[..] else {
        panic!("two vectors expected")
    };
    assert_eq!(first.vector(&embs), &embs[0].vectors[..768]);
    assert!(second.vector(&embs).iter().all(|&x| x == -1.0));
}

#[test]
fn embedding_is_never_split_across_chunks() {
    let tok = ClipTokenizer::embedded();
    let embs = [embedding("<wide-style>", 4)];
    let triggers = Triggers::new(&tok, &embs, 768).unwrap();
    // 73 cats leave 2 free positions: the 4 vectors go to the next chunk.
    let p = chunk_prompt(&tok, &triggers, &format!("{} <wide-style> cat", cats(73))).unwrap();
    assert_eq!(p.chunks.len(), 2);
    assert_frame(&p.chunks[0], 73);
    assert!(p.chunks[0].injected.is_empty());
    assert_frame(&p.chunks[1], 5);
    let rows: Vec<(usize, usize)> = p.chunks[1].injected.iter().map(|i| (i.position, i.row)).collect();
    assert_eq!(rows, [(1, 0), (2, 1), (3, 2), (4, 3)]);
    assert_eq!(p.chunks[1].ids[5], CAT);
}

#[test]
fn comma_backtrack_carries_embedding_vectors() {
    let tok = ClipTokenizer::embedded();
    let embs = [embedding("<two-vec>", 2)];
    let triggers = Triggers::new(&tok, &embs, 768).unwrap();
    // 70 cats, comma, 2 vectors, 2 cats = 75; the next cat moves the 4 after the comma.
    let p = chunk_prompt(&tok, &triggers, &format!("{}, <two-vec> {}", cats(70), cats(5))).unwrap();
    assert_frame(&p.chunks[0], 71);
    assert!(p.chunks[0].injected.is_empty());
    let rows: Vec<(usize, usize)> = p.chunks[1].injected.iter().map(|i| (i.position, i.row)).collect();
    assert_eq!(rows, [(1, 0), (2, 1)]);
    assert_frame(&p.chunks[1], 7);
}

#[test]
fn trigger_matches_only_on_token_boundaries() {
    let tok = ClipTokenizer::embedded();
    let embs = [embedding("<toy>", 1)];
    let triggers = Triggers::new(&tok, &embs, 768).unwrap();
    let hit = chunk_prompt(&tok, &triggers, "a <toy> here").unwrap();
    assert_eq!(hit.chunks[0].injected.len(), 1);
    // `>,` is one CLIP word, so the trigger's last token is not there (A1111 behaves alike).
    let miss = chunk_prompt(&tok, &triggers, "a <toy>, here").unwrap();
    assert!(miss.chunks[0].injected.is_empty());
}

#[test]
fn negative_prompt_is_padded_to_the_prompt_and_vice_versa() {
    let tok = ClipTokenizer::embedded();
    let none = Triggers::none();
    let (pos, neg) = chunk_pair(&tok, &none, &cats(100), "").unwrap();
    assert_eq!((pos.chunks.len(), neg.chunks.len()), (2, 2));
    assert_eq!(neg.chunks, [Chunk::empty(), Chunk::empty()]);
    let (pos, neg) = chunk_pair(&tok, &none, "cat", &cats(200)).unwrap();
    assert_eq!((pos.chunks.len(), neg.chunks.len()), (3, 3));
    assert_frame(&pos.chunks[0], 1);
    assert_eq!(pos.chunks[1..], [Chunk::empty(), Chunk::empty()]);
}

#[test]
fn bad_weight_is_an_error() {
    let err = chunk_prompt(&ClipTokenizer::embedded(), &Triggers::none(), "(cat:1..2)")
        .unwrap_err()
        .to_string();
    assert!(err.contains("1..2"), "{err}");
}
