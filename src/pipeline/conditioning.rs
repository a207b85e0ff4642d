//! Prompts to the UNet's context: `<lora:...>` tags cut out (A1111), chunking (75 tokens, BREAK, embedding
//! triggers), one text-encoder pass per 77-token chunk, chunks concatenated
//! along the sequence axis, A1111's emphasis rule applied per chunk.
//!
//! The negative prompt is padded to the prompt's chunk count (and the other
//! way round) so both encode to `[chunks * 77, D]`; an empty negative prompt
//! is the encoding of `""`, as in diffusers.
//!
//! Letters: L = chunks * 77 tokens, D text width.

use super::load::Pipeline;
use super::request::Request;
use crate::checkpoint::Embedding;
use crate::lora::strip_tags;
use crate::text::triggers::{explain_unused, used_embeddings};
use crate::text::{apply_emphasis, chunk_pair, chunk_prompt, PromptChunks, Triggers};
use crate::{Result, Tensor};

/// The UNet's context for one request, on the model's device, f32.
pub struct Conditioning {
    /// `[2, L, D]`: the negative prompt's states then the prompt's (diffusers'
    /// order), or `[1, L, D]` (the prompt's only) when guidance is off.
    pub context: Tensor,
    /// Whether `context` holds the unconditional half.
    pub guided: bool,
}

/// Whether a guidance scale needs the unconditional pass: `uncond + s * (cond - uncond)`
/// is `cond` at `s = 1`. Scales below 1 are applied (0 gives the unconditional
/// image); diffusers would skip guidance for every scale <= 1.
pub fn guided(cfg_scale: f32) -> bool {
    cfg_scale != 1.0
}

impl Pipeline {
    /// Encodes the request's prompt (and negative prompt when guided).
    pub fn condition(&self, req: &Request) -> Result<Conditioning> {
        let embeddings: Vec<Embedding> = req.embeddings.iter().map(|t| t.embedding.clone()).collect();
        let width = self.text_encoder.config().hidden_size;
        let triggers = Triggers::new(&self.tokenizer, &embeddings, width)?;
        let guided = guided(req.cfg_scale);
        let (states, len) = if guided {
            let (pos, neg) = chunk_pair(
                &self.tokenizer,
                &triggers,
                &strip_tags(&req.prompt),
                &req.negative_prompt,
            )?;
            let mut states = self.encode_chunks(&neg, &embeddings, req.clip_skip)?;
            states.extend(self.encode_chunks(&pos, &embeddings, req.clip_skip)?);
            (states, pos.chunks.len() * crate::text::CHUNK_LEN)
        } else {
            let pos = chunk_prompt(&self.tokenizer, &triggers, &strip_tags(&req.prompt))?;
            let states = self.encode_chunks(&pos, &embeddings, req.clip_skip)?;
            (states, pos.chunks.len() * crate::text::CHUNK_LEN)
        };
        let batch = if guided { 2 } else { 1 };
        let context = Tensor::from_vec(states, &[batch, len, width], self.device())?; // [B, L, D]
        Ok(Conditioning { context, guided })
    }

    /// Which of `req.embeddings` the prompt or the negative prompt uses (an unused
    /// one's trigger occurs nowhere as a token sequence).
    fn embeddings_used(&self, req: &Request) -> Result<Vec<bool>> {
        let embeddings: Vec<Embedding> = req.embeddings.iter().map(|t| t.embedding.clone()).collect();
        let width = self.text_encoder.config().hidden_size;
        let triggers = Triggers::new(&self.tokenizer, &embeddings, width)?;
        let (pos, neg) = chunk_pair(
            &self.tokenizer,
            &triggers,
            &strip_tags(&req.prompt),
            &req.negative_prompt,
        )?;
        Ok(used_embeddings(embeddings.len(), &[&pos, &neg]))
    }

    /// One warning per embedding that neither prompt uses: it changes nothing, which
    /// the user must hear about rather than find out from the image.
    pub fn unused_embedding_warnings(&self, req: &Request) -> Result<Vec<String>> {
        let used = self.embeddings_used(req)?;
        Ok(req
            .embeddings
            .iter()
            .zip(used)
            .filter(|(_, used)| !used)
            .map(|(t, _)| {
                format!(
                    "embedding {:?} is not used: {}",
                    t.embedding.trigger,
                    explain_unused(&t.embedding.trigger, &[&req.prompt, &req.negative_prompt])
                )
            })
            .collect())
    }

    /// `(trigger, file hash)` of the embeddings the prompts use: what the PNG records
    /// (A1111's `TI hashes`), so an unused file is not claimed to have shaped the image.
    pub fn used_embedding_hashes(&self, req: &Request) -> Vec<(String, String)> {
        // Cannot fail once `condition` has run on `req` (same checks); were it to, every
        // embedding is recorded, as before this filter existed.
        let used = self
            .embeddings_used(req)
            .unwrap_or_else(|_| vec![true; req.embeddings.len()]);
        req.embeddings
            .iter()
            .zip(used)
            .filter(|(_, used)| *used)
            .map(|(t, _)| (t.embedding.trigger.clone(), t.hash.clone()))
            .collect()
    }

    /// `[L * D]` host states of one prompt: each chunk encoded on its own,
    /// emphasis applied, chunks concatenated.
    fn encode_chunks(
        &self,
        prompt: &PromptChunks,
        embeddings: &[Embedding],
        clip_skip: usize,
    ) -> Result<Vec<f32>> {
        let mut states = Vec::new();
        for chunk in &prompt.chunks {
            let injected: Vec<(usize, &[f32])> = chunk
                .injected
                .iter()
                .map(|inj| (inj.position, inj.vector(embeddings)))
                .collect();
            let hidden = self.text_encoder.forward(&chunk.ids, &injected, clip_skip)?; // [1, 77, D]
            states.extend(hidden.to_vec_f32()?);
        }
        let width = self.text_encoder.config().hidden_size;
        apply_emphasis(&mut states, &prompt.weights(), width);
        Ok(states)
    }
}
