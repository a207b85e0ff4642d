//! `sd-wgpu tokenize "PROMPT"`: the prompt's CLIP chunks and A1111's token counter.
//!
//! Uses the embedded SD 1.x tokenizer and the full prompt syntax (emphasis, BREAK, long
//! prompts split into 75-token chunks). Output: each chunk's ids (BOS ... EOS, then the
//! padding count), and the counter line `tokens/capacity` as A1111 shows it ("12/75").
//! With `--verbose`, one line per position: index, id, weight, token text.
//! With `--embedding FILE` (repeatable), the embedding's trigger is matched as in
//! generation, and a line per embedding says which tokens the trigger became and
//! whether (and where) the prompt uses it.

use std::fmt::Write;
use std::path::PathBuf;

use sd_wgpu::checkpoint::Embedding;
use sd_wgpu::text::triggers::explain_unused;

use super::stdout::Stdout;
use sd_wgpu::text::{chunk_prompt, Chunk, ClipTokenizer, PromptChunks, Triggers, EOS};

#[derive(clap::Args)]
pub struct Args {
    /// The prompt to tokenize (A1111 syntax: (word:1.2), [word], BREAK, \( escapes).
    pub prompt: String,
    /// Also print each token's string, id and weight.
    #[arg(long)]
    pub verbose: bool,
    /// Textual-inversion embedding file: show whether the prompt uses its trigger;
    /// repeat for several.
    #[arg(long = "embedding", value_name = "FILE")]
    pub embeddings: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let tokenizer = ClipTokenizer::embedded();
    let embeddings = args
        .embeddings
        .iter()
        .map(Embedding::load)
        .collect::<sd_wgpu::Result<Vec<_>>>()?;
    // No text encoder here, so no width to match: the embeddings need only agree with
    // each other (the demo model's are 64 wide, SD 1.x's 768).
    let width = embeddings.first().map_or(0, |e| e.width);
    let triggers = Triggers::new(&tokenizer, &embeddings, width)?;
    // `<lora:...>` tags are cut out before encoding, as generation does.
    let chunks = chunk_prompt(&tokenizer, &triggers, &sd_wgpu::lora::strip_tags(&args.prompt))?;
    let mut text = render(&tokenizer, &chunks, args.verbose);
    render_embeddings(
        &mut text,
        &tokenizer,
        &triggers,
        &embeddings,
        &chunks,
        &args.prompt,
    );
    let mut out = Stdout::new();
    out.print(&text);
    out.finish()
}

/// Per embedding: its trigger's tokens, then where its vectors went or why nowhere.
fn render_embeddings(
    out: &mut String,
    tokenizer: &ClipTokenizer,
    triggers: &Triggers,
    embeddings: &[Embedding],
    prompt: &PromptChunks,
    text: &str,
) {
    for (index, emb) in embeddings.iter().enumerate() {
        let tokens: Vec<String> = triggers
            .ids(index)
            .iter()
            .map(|&id| tokenizer.display(id))
            .collect();
        // (chunk, first position) of each use: rows are consecutive positions.
        let uses: Vec<String> = prompt
            .chunks
            .iter()
            .enumerate()
            .flat_map(|(c, chunk)| {
                chunk
                    .injected
                    .iter()
                    .filter(move |inj| inj.embedding == index && inj.row == 0)
                    .map(move |inj| format!("chunk {} position {}", c + 1, inj.position))
            })
            .collect();
        let verdict = if uses.is_empty() {
            format!("NOT USED: {}", explain_unused(&emb.trigger, &[text]))
        } else {
            format!("used at {}", uses.join(", "))
        };
        writeln!(
            out,
            "embedding {:?} ({} vector{}): trigger tokens {}; {verdict}",
            emb.trigger,
            emb.n,
            if emb.n == 1 { "" } else { "s" },
            tokens.join(" ")
        )
        .unwrap();
    }
}

fn render(tokenizer: &ClipTokenizer, prompt: &PromptChunks, verbose: bool) -> String {
    let mut out = String::new();
    let total = prompt.chunks.len();
    for (i, chunk) in prompt.chunks.iter().enumerate() {
        let used = chunk.tokens + 2; // BOS, tokens, EOS
        let padding = chunk.ids.len() - used;
        writeln!(out, "chunk {}/{total}: {} tokens", i + 1, chunk.tokens).unwrap();
        if verbose {
            render_positions(&mut out, tokenizer, chunk, used);
            writeln!(out, "       ({padding} x {EOS} padding, weight 1)").unwrap();
        } else {
            let ids: Vec<String> = chunk.ids[..used].iter().map(u32::to_string).collect();
            writeln!(out, "  {} (+ {padding} x {EOS} padding)", ids.join(" ")).unwrap();
        }
    }
    writeln!(out, "{}/{}", prompt.token_count, prompt.token_capacity()).unwrap();
    out
}

fn render_positions(out: &mut String, tokenizer: &ClipTokenizer, chunk: &Chunk, used: usize) {
    for position in 0..used {
        let id = chunk.ids[position];
        let text = match chunk.injected.iter().find(|inj| inj.position == position) {
            Some(inj) => format!("<embedding #{} vector {}>", inj.embedding + 1, inj.row),
            None => tokenizer.display(id),
        };
        writeln!(
            out,
            "  {position:>3}  {id:>5}  {:>6.3}  {text}",
            chunk.weights[position]
        )
        .unwrap();
    }
}
