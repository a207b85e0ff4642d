"""Writes the CLIP tokenizer files of a diffusers folder (`tokenizer/`) from OpenAI's BPE data.

The source is `clip/bpe_simple_vocab_16e6.txt.gz` from the `openai-clip` PyPI package (MIT).
The ids are those of SD 1.x's tokenizer: 256 byte symbols, the same 256 with `</w>`, one id per
merge (lines 1..48894 of the file), then `<|startoftext|>` = 49406 and `<|endoftext|>` = 49407.
`merges.txt` keeps the header line that transformers' CLIPTokenizer skips.

Run as a script to write the files and check them against OpenAI's own tokenizer.
"""

import gzip
import importlib.util
import json
from pathlib import Path

N_MERGES = 49152 - 256 - 2  # 48894, as in CLIP
VOCAB_SIZE = 2 * 256 + N_MERGES + 2  # 49408


def _openai_module(name):
    """Imports a module file of the installed `clip` package without its __init__ (which needs
    pkg_resources and torchvision, neither of which the tokenizer uses)."""
    spec = importlib.util.find_spec("clip")
    path = Path(spec.submodule_search_locations[0]) / f"{name}.py"
    module_spec = importlib.util.spec_from_file_location(f"openai_clip_{name}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def bpe_path():
    spec = importlib.util.find_spec("clip")
    return Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"


def write_tokenizer(folder):
    """Writes vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    byte_symbols = list(_openai_module("simple_tokenizer").bytes_to_unicode().values())
    lines = gzip.open(bpe_path()).read().decode("utf-8").split("\n")
    merges = lines[1 : N_MERGES + 1]
    tokens = byte_symbols + [b + "</w>" for b in byte_symbols]
    tokens += ["".join(m.split(" ")) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == VOCAB_SIZE and len(set(tokens)) == VOCAB_SIZE
    vocab = {t: i for i, t in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    config = dict(special, tokenizer_class="CLIPTokenizer", model_max_length=77, do_lower_case=True, errors="replace")
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def check_tokenizer(folder, texts):
    """Asserts transformers' CLIPTokenizer on `folder` gives OpenAI's ids for every text."""
    from transformers import CLIPTokenizer

    ours = CLIPTokenizer.from_pretrained(str(folder))
    reference = _openai_module("simple_tokenizer").SimpleTokenizer(bpe_path=str(bpe_path()))
    sot, eot = reference.encoder["<|startoftext|>"], reference.encoder["<|endoftext|>"]
    assert (sot, eot) == (49406, 49407) and len(ours) == VOCAB_SIZE
    for text in texts:
        want = [sot] + reference.encode(text) + [eot]
        got = ours(text).input_ids
        assert got == want, f"{text!r}: transformers {got} != openai {want}"
        padded = ours(text, padding="max_length", max_length=77, truncation=True).input_ids
        assert padded == (want + [eot] * 77)[:77], text


if __name__ == "__main__":
    import argparse
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    import numpy as np

    import data

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    args = ap.parse_args()
    write_tokenizer(args.folder)
    rng = np.random.default_rng(0)
    texts = [data.caption(rng, data.sample_scene(rng)) for _ in range(500)]
    texts += ["", "Hello, World!  café naïve  <teal> don't 123 #hash", "a photo of an astronaut riding a horse"]
    check_tokenizer(args.folder, texts)
    print(f"wrote {args.folder}: {VOCAB_SIZE} ids; {len(texts)} texts tokenize as OpenAI's CLIP does")
