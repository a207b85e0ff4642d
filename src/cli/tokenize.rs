//! `sd-wgpu tokenize "PROMPT"`: the prompt's CLIP chunks and A1111's token counter.
//!
//! Uses the embedded SD 1.x tokenizer and the full prompt syntax (emphasis, BREAK, long
//! prompts split into 75-token chunks). Output: each chunk's ids (BOS ... EOS, then the
//! padding count), and the counter line `tokens/capacity` as A1111 shows it ("12/75").
//! With `--verbose`, one line per position: index, id, weight, token text.

use std::fmt::Write;

use super::stdout::Stdout;
use sd_wgpu::text::{chunk_prompt, Chunk, ClipTokenizer, PromptChunks, Triggers, EOS};

#[derive(clap::Args)]
pub struct Args {
    /// The prompt to tokenize (A1111 syntax: (word:1.2), [word], BREAK, \( escapes).
    pub prompt: String,
    /// Also print each token's string, id and weight.
    #[arg(long)]
    pub verbose: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let tokenizer = ClipTokenizer::embedded();
    let chunks = chunk_prompt(&tokenizer, &Triggers::none(), &args.prompt)?;
    let mut out = Stdout::new();
    out.print(&render(&tokenizer, &chunks, args.verbose));
    out.finish()
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
            Some(inj) => format!("<embedding {} vector {}>", inj.embedding, inj.row),
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
