#!/usr/bin/env python3
"""Derive the CLIP tokenizer vocabulary shipped in assets/clip/ from OpenAI's BPE file.

Source: `clip/bpe_simple_vocab_16e6.txt.gz` in the PyPI package `openai-clip` (OpenAI's
CLIP repository code, MIT license). Output: the two files a diffusers `tokenizer/` folder
carries, in the same format:

- `vocab.json`: token -> id, 49408 entries: the 256 byte symbols of CLIP's byte-to-unicode
  table (in that table's order), the same 256 with `</w>`, one token per merge (the two
  halves joined), then `<|startoftext|>` = 49406 and `<|endoftext|>` = 49407;
- `merges.txt`: `#version: 0.2` then the 48894 merges (lines 1..48894 of the source file,
  line 0 is its header), one `left right` pair per line, in rank order.

The script then checks its output: the vocabulary and merge ranks equal those of
openai-clip's own `SimpleTokenizer`, and transformers' `CLIPTokenizer` built from the
written files tokenizes a few prompts exactly like `SimpleTokenizer` does.

Run: ref/bin/python tools/make_clip_vocab.py  (writes assets/clip/)
"""

import gzip
import importlib.metadata
import importlib.util
import json
import os
import sys

N_MERGES = 49152 - 256 - 2  # CLIP's vocabulary size minus byte symbols and specials
OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "assets", "clip")


def load_simple_tokenizer_module():
    # `import clip` runs clip/__init__.py, which needs torch and pkg_resources; the
    # tokenizer module itself needs only ftfy and regex, so load it on its own.
    pkg_dir = importlib.util.find_spec("clip").submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location(
        "clip_simple_tokenizer", os.path.join(pkg_dir, "simple_tokenizer.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, os.path.join(pkg_dir, "bpe_simple_vocab_16e6.txt.gz")


def build(bpe_path, bytes_to_unicode):
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]
    assert len(merges) == N_MERGES and all(len(m) == 2 for m in merges)
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == len(tokens) == 49408, "duplicate tokens in the derived vocabulary"
    return vocab, merges


def main():
    st, bpe_path = load_simple_tokenizer_module()
    vocab, merges = build(bpe_path, st.bytes_to_unicode)
    os.makedirs(OUT_DIR, exist_ok=True)
    vocab_path = os.path.join(OUT_DIR, "vocab.json")
    merges_path = os.path.join(OUT_DIR, "merges.txt")
    with open(vocab_path, "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    with open(merges_path, "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for left, right in merges:
            f.write(f"{left} {right}\n")

    # 1. Same tables as openai-clip's own tokenizer.
    reference = st.SimpleTokenizer(bpe_path)
    assert reference.encoder == vocab, "vocabulary differs from SimpleTokenizer's"
    assert reference.bpe_ranks == {m: i for i, m in enumerate(merges)}, "merge ranks differ"

    # 2. transformers reads the written files and agrees with SimpleTokenizer.
    from transformers import CLIPTokenizer

    hf = CLIPTokenizer(vocab=vocab_path, merges=merges_path)
    prompts = [
        "a photo of a cat",
        "masterpiece, best quality, 1girl, (detailed eyes:1.2), <lora:foo:0.8>",
        "Café naïve façade, Zürich 東京 😀 it's they're",
        "supercalifragilisticexpialidocious antidisestablishmentarianism",
    ]
    for p in prompts:
        ours = hf(p, add_special_tokens=False)["input_ids"]
        ref = reference.encode(p)
        assert ours == ref, f"transformers {ours} != SimpleTokenizer {ref} for {p!r}"
    assert hf.bos_token_id == 49406 and hf.eos_token_id == 49407

    version = importlib.metadata.version("openai-clip")
    print(f"wrote {vocab_path} ({len(vocab)} tokens) and {merges_path} ({len(merges)} merges)")
    print(f"source: openai-clip {version}, checked with transformers {importlib.metadata.version('transformers')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
