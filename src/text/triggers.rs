//! Textual-inversion triggers: where an [`Embedding`]'s vectors replace prompt tokens.
//!
//! As in A1111, a trigger word is tokenized like any prompt text and matched as a token
//! sequence inside each weighted piece of the prompt (longest trigger first). Matching on
//! tokens means matching on CLIP's word boundaries: the trigger `<cat-toy>` matches in
//! `a <cat-toy> on a mat`, but not in `a <cat-toy>, on a mat`, where `>,` is one token.
//! (diffusers, which adds the trigger to the vocabulary, would match there.) An unused
//! trigger is reported to the user with [`explain_unused`], never skipped silently.

use std::collections::HashMap;

use super::{ClipTokenizer, PromptChunks, CHUNK_TOKENS};
use crate::checkpoint::Embedding;
use crate::{Error, Result};

/// The triggers of a set of embeddings, checked against a tokenizer and a text encoder
/// width. Embedding indices refer to the slice given to [`Triggers::new`].
#[derive(Debug, Clone, Default)]
pub struct Triggers {
    /// Token ids of each trigger and its vector count, by embedding index.
    entries: Vec<(Vec<u32>, usize)>,
    /// First token id -> embedding indices starting with it, longest trigger first.
    by_first: HashMap<u32, Vec<usize>>,
}

impl Triggers {
    /// No embeddings.
    pub fn none() -> Self {
        Self::default()
    }

    /// Checks each embedding and tokenizes its trigger. Refused: vectors of another width
    /// than the text encoder's (`width`), a malformed vector buffer, no vectors or more
    /// than a chunk holds, a trigger that is empty or a single vocabulary token (every
    /// use of that ordinary word would be replaced), two triggers with the same tokens.
    pub fn new(tokenizer: &ClipTokenizer, embeddings: &[Embedding], width: usize) -> Result<Self> {
        let mut entries = Vec::with_capacity(embeddings.len());
        let mut by_first: HashMap<u32, Vec<usize>> = HashMap::new();
        for (index, emb) in embeddings.iter().enumerate() {
            let refuse = |msg: String| Err(Error::invalid(format!("embedding {:?}", emb.trigger), msg));
            if emb.width != width {
                return refuse(format!(
                    "its vectors are {} wide but the text encoder's are {width} \
                     (an embedding trained for another model family?)",
                    emb.width
                ));
            }
            if emb.vectors.len() != emb.n * emb.width {
                return refuse(format!(
                    "expected {} x {} = {} values, found {}",
                    emb.n,
                    emb.width,
                    emb.n * emb.width,
                    emb.vectors.len()
                ));
            }
            if emb.n == 0 || emb.n > CHUNK_TOKENS {
                return refuse(format!(
                    "it has {} vectors; a prompt chunk holds 1 to {CHUNK_TOKENS}",
                    emb.n
                ));
            }
            let ids = tokenizer.encode(&emb.trigger);
            match ids.as_slice() {
                [] => return refuse("the trigger has no tokens (empty or only spaces)".into()),
                [id] => {
                    return refuse(format!(
                        "the trigger is the ordinary vocabulary token {:?} (id {id}): every use of \
                         that word would be replaced; rename the embedding (e.g. <{}>)",
                        tokenizer.display(*id),
                        emb.trigger
                    ))
                }
                _ => {}
            }
            if let Some(other) = entries.iter().position(|(other, _)| *other == ids) {
                return refuse(format!(
                    "embedding {:?} has the same trigger tokens; give them different names",
                    embeddings[other].trigger
                ));
            }
            by_first.entry(ids[0]).or_default().push(index);
            entries.push((ids, emb.n));
        }
        for candidates in by_first.values_mut() {
            candidates.sort_by_key(|&i| std::cmp::Reverse(entries[i].0.len()));
        }
        Ok(Self { entries, by_first })
    }

    /// The embedding whose trigger starts at `tokens[position]`, with the number of
    /// prompt tokens it covers.
    pub fn find_at(&self, tokens: &[u32], position: usize) -> Option<(usize, usize)> {
        let candidates = self.by_first.get(&tokens[position])?;
        candidates.iter().find_map(|&index| {
            let ids = &self.entries[index].0;
            tokens[position..].starts_with(ids).then_some((index, ids.len()))
        })
    }

    /// The number of vectors (prompt positions) of embedding `index`.
    pub fn vector_count(&self, index: usize) -> usize {
        self.entries[index].1
    }

    /// The token ids of embedding `index`'s trigger.
    pub fn ids(&self, index: usize) -> &[u32] {
        &self.entries[index].0
    }
}

/// Which embeddings the chunks of `prompts` place vectors for, by embedding index.
pub fn used_embeddings(count: usize, prompts: &[&PromptChunks]) -> Vec<bool> {
    let mut used = vec![false; count];
    for injection in prompts.iter().flat_map(|p| &p.chunks).flat_map(|c| &c.injected) {
        used[injection.embedding] = true;
    }
    used
}

/// Why `trigger` matched nowhere in `prompts`, in words for the user. The usual
/// cause is punctuation touching the trigger: CLIP reads `<cat-toy>,` as `<`, `cat`,
/// `-`, `toy`, `>,`, so the trigger's last token `>` is not there (A1111 matches the
/// same way and misses it too).
pub fn explain_unused(trigger: &str, prompts: &[&str]) -> String {
    let needle = trigger.to_lowercase();
    for prompt in prompts {
        let lower = prompt.to_lowercase();
        let Some(at) = lower.find(&needle) else { continue };
        // The whitespace-delimited text around the occurrence: what the user typed.
        let start = lower[..at].rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let end = lower[at + needle.len()..]
            .find(char::is_whitespace)
            .map_or(lower.len(), |i| at + needle.len() + i);
        return format!(
            "{trigger:?} occurs only inside {:?}, which CLIP splits into other words (as A1111 \
             does): put spaces around the trigger",
            &lower[start..end]
        );
    }
    let where_ = if prompts.len() > 1 {
        "the prompt or the negative prompt"
    } else {
        "the prompt"
    };
    format!("its trigger {trigger:?} does not occur in {where_}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embedding(trigger: &str, n: usize, width: usize) -> Embedding {
        Embedding {
            trigger: trigger.into(),
            n,
            width,
            vectors: vec![0.5; n * width],
        }
    }

    #[test]
    fn finds_longest_trigger() {
        let tok = ClipTokenizer::embedded();
        let embs = [embedding("<cat>", 1, 8), embedding("<cat>-toy", 2, 8)];
        let triggers = Triggers::new(&tok, &embs, 8).unwrap();
        let ids = tok.encode("a <cat>-toy and a <cat>");
        let hits: Vec<_> = (0..ids.len()).filter_map(|p| triggers.find_at(&ids, p)).collect();
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0].0, 1, "the longer trigger wins");
        assert_eq!(hits[1].0, 0);
        assert_eq!(triggers.vector_count(1), 2);
    }

    #[test]
    fn refusals() {
        let tok = ClipTokenizer::embedded();
        let err = |embs: &[Embedding]| Triggers::new(&tok, embs, 768).unwrap_err().to_string();
        let e = err(&[embedding("<style>", 1, 1024)]);
        assert!(
            e.contains("1024") && e.contains("768") && e.contains("<style>"),
            "{e}"
        );
        let e = err(&[embedding("cat", 1, 768)]);
        assert!(e.contains("vocabulary token") && e.contains("cat</w>"), "{e}");
        let e = err(&[embedding("<a-b>", 2, 768), embedding("<A-B>", 1, 768)]);
        assert!(e.contains("same trigger"), "{e}");
        let e = err(&[embedding("  ", 1, 768)]);
        assert!(e.contains("no tokens"), "{e}");
        let e = err(&[embedding("<big>", 76, 768)]);
        assert!(e.contains("76 vectors"), "{e}");
        let mut bad = embedding("<x-y>", 2, 768);
        bad.vectors.pop();
        let e = err(&[bad]);
        assert!(e.contains("1536") && e.contains("1535"), "{e}");
    }

    #[test]
    fn explains_unused_triggers() {
        let e = explain_unused("<hazard>", &["a <Hazard>, on black", ""]);
        assert!(e.contains("\"<hazard>,\"") && e.contains("spaces"), "{e}");
        let e = explain_unused("<hazard>", &["a cat", "\"<hazard>\""]);
        assert!(e.contains("\"\\\"<hazard>\\\"\""), "{e}");
        let e = explain_unused("<hazard>", &["a cat", "blurry"]);
        assert!(e.contains("does not occur"), "{e}");
    }
}
