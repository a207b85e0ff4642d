#!/usr/bin/env python3
"""Write tests/fixtures/tokenizer_golden.json: CLIP token ids of ~2500 varied prompts.

Reference: the tokenizer SD 1.x's text encoder was trained with, OpenAI CLIP's
`SimpleTokenizer` from the PyPI package openai-clip, with ftfy installed (ftfy.fix_text,
html.unescape twice, whitespace collapse, strip, lowercase, CLIP's regex, byte-level BPE).
No truncation, no BOS/EOS.

The vocabulary files are checked on the same prompts: transformers' `CLIPTokenizer` built
from assets/clip/vocab.json + merges.txt, fed the text after CLIP's cleaning (openai-clip's
own `basic_clean` / `whitespace_clean` + lower), must produce the same ids for every prompt
except where two known pipeline differences unrelated to the vocabulary apply (see below).
transformers 5 has no "slow" Python CLIPTokenizer any more: its CLIPTokenizer is the Rust
`tokenizers` pipeline, which does NFC instead of ftfy and no html unescape, hence the
explicit cleaning. For information the script also counts how many prompts that pipeline,
fed the raw prompt as diffusers does with transformers 5, tokenizes differently.

Per prompt the file stores:
- `prompt`, `ids`;
- `ids_literal` when `ids` contain 49406/49407 (the prompt spells `<|startoftext|>` or
  `<|endoftext|>`): the same tokenizer with the two control-token alternatives removed
  from its regex, i.e. the text tokenized as ordinary characters. sd-wgpu never lets
  prompt text inject a control token, so these are the ids it must produce;
- `ftfy` (ftfy.fix_text(prompt)) and `ftfy_steps` (the kinds of fix ftfy's explanation
  lists) when ftfy changes the prompt, so the test can tell a mismatch caused by an ftfy
  repair that sd-wgpu does not reproduce from any other.

Prompts are generated deterministically (random.Random(SEED)) from word lists, plus
hand-written edge cases.

Run: ref/bin/python tools/make_tokenizer_golden.py
"""

import importlib.metadata
import importlib.util
import json
import os
import random
import sys

import ftfy
import regex

SEED = 20240601
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
VOCAB = os.path.join(ROOT, "assets", "clip", "vocab.json")
MERGES = os.path.join(ROOT, "assets", "clip", "merges.txt")
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizer_golden.json")

SUBJECTS = """cat dog woman man girl boy knight wizard dragon castle forest mountain lake city street
robot astronaut samurai witch elf dwarf fox owl wolf horse tiger lion portrait landscape cottage
lighthouse spaceship train car motorcycle flower rose sunflower tree waterfall ocean beach desert
village temple cathedral bridge river island volcano cyberpunk city steampunk airship teapot
skull mushroom crystal sword shield crown book library kitchen cafe market garden""".split()
ADJECTIVES = """beautiful detailed intricate ornate ancient futuristic cozy dark moody vibrant colorful
pastel neon golden silver rusty glowing misty foggy rainy snowy sunny serene epic dramatic cute
tiny giant majestic elegant gothic baroque minimalist surreal whimsical ethereal mysterious""".split()
STYLES = """oil painting, watercolor, digital art, concept art, matte painting, photorealistic,
hyperrealistic, octane render, unreal engine, 3d render, pencil sketch, ink drawing, anime style,
studio ghibli style, pixel art, low poly, isometric, vaporwave, synthwave, art nouveau, ukiyo-e,
impressionism, cinematic lighting, volumetric lighting, golden hour, rim lighting, bokeh,
depth of field, 35mm photograph, 85mm lens, f/1.8, long exposure, tilt-shift, macro photography,
trending on artstation, highly detailed, sharp focus, 8k, 4k uhd, hdr, masterpiece,
best quality, ultra-detailed, award winning, film grain, kodak portra 400""".replace("\n", " ").split(", ")
NEGATIVE = """lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits,
cropped, worst quality, low quality, normal quality, jpeg artifacts, signature, watermark,
username, blurry, deformed, disfigured, mutated, ugly, duplicate, morbid, mutilated, out of frame,
extra limbs, poorly drawn face, poorly drawn hands""".replace("\n", " ").split(", ")
CONTRACTIONS = """it's don't can't won't I'm you're we've they'll she'd he's isn't wasn't couldn't
shouldn't I'll you'd let's that's what's there's o'clock rock'n'roll y'all ma'am""".split()
ACCENTED = """café naïve façade Zürich São Paulo crème brûlée piñata jalapeño Ångström smørrebrød
Łódź Kraków Dvořák Ærø résumé déjà vu über señorita coöperate Mötley Crüe Björk Straße""".split()
CJK = """東京 京都 富士山 桜 侍 猫 犬 龍 城 森 海 山 中文 漢字 日本語 ひらがな カタカナ アニメ 한국어 서울
김치 안녕하세요 北京 上海 长城 熊猫 水墨画 浮世絵 油絵""".split()
EMOJI = [
    "😀", "🔥", "✨", "🌸", "🐱", "🐉", "🌊", "❤️", "👍🏽", "👩‍🚀", "🧙‍♂️", "🏳️‍🌈", "🇯🇵", "🇫🇷",
    "🍄", "🌙", "⭐", "☕", "🎨", "📷", "🤖", "👁️", "🦊", "🌈", "⚔️", "🏰", "🪐", "🫠", "🧑🏿‍🎨",
]
SCRIPTS = [
    "Москва", "красивый закат", "Ελλάδα", "ΟΔΟΣ", "ΣΟΦΙΑ ΣΟΦΟΣ", "עברית", "العربية", "مرحبا بالعالم",
    "हिन्दी", "नमस्ते", "ภาษาไทย", "Tiếng Việt", "İstanbul", "IĞDIR", "ქართული", "Հայերեն", "ᚠᚢᚦᚨᚱᚲ",
    "ꓚꓲꓮ", "ㄅㄆㄇ", "ሰላም", "ᏣᎳᎩ", "ⴰⵣⵓⵍ", "ŞİŞLİ", "ǅemal", "ǈubljana", "ﬁnance ﬂower",
]
SYMBOLS = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~¡¢£¤¥¦§¨©ª«¬®¯°±²³´µ¶·¸¹º»¼½¾¿×÷")
SYMBOLS += ["…", "—", "–", "‘", "’", "“", "”", "•", "™", "€", "№", "∞", "≈", "≠", "√", "∑", "°C", "½", "⅓"]
HTML = [
    "&amp;", "&lt;", "&gt;", "&quot;", "&#39;", "&#x27;", "&nbsp;", "&eacute;", "&EACUTE;", "&copy;",
    "&hellip;", "&mdash;", "&rsquo;", "&ldquo;", "&rdquo;", "&amp;amp;", "&amp;lt;", "&amp;amp;amp;",
    "&amp", "&lt", "&copy2024", "&notit;", "&notin;", "&#65;", "&#x41;", "&#65", "&#0;", "&#128;",
    "&#150;", "&#x80;", "&#129;", "&#1;", "&#x1F600;", "&#xD800;", "&#99999999;", "&#xFFFE;",
    "&unknown;", "&AMP;", "&Amp;", "&SZLIG;", "&frac12;", "&FRAC12;", "&ntilde;&NTILDE;&nTILDE;",
    "&times", "&timesb;", "&#12ab;", "&#x;", "&#;", "& amp;", "&&amp;", "&amp;#39;", "&#x26;amp;", "e&#769;",
    "cafe&#x301;", "&#x2028;", "&#28;", "&#x85;", "&#13;", "&#x9;", "&#xa0;", "&NotANumber;",
]
WHITESPACE = [
    " ", "  ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u2003", "\u3000", "\u200b", "\u2028", "\u2029",
    "\u0085", "\u000b", "\u000c", "\u001c", "\u001f", "\u202f", "\u205f", "\u1680", "\ufeff", "\u200d",
]
CONTROL = ["\x00", "\x01", "\x07", "\x1b", "\x7f", "\x80", "\x93", "\x94", "\x9d", "\u206a", "\ufff9", "\ufffc"]
A1111 = [
    "(masterpiece:1.2)", "((best quality))", "[blurry]", "[[lowres]]", "(red hair:0.8)", "{detailed}",
    "\\(escaped\\)", "\\[bracket\\]", "<lora:add_detail:0.6>", "<hypernet:foo:1>", "BREAK", "AND",
    "[cat:dog:0.5]", "[red|blue]", "(a:1.5) (b:-0.5)", "embedding:easynegative", "(((((wow)))))",
    "score_9, score_8_up", "1girl, solo", "(word:1.3", "unbalanced)", "a:b:c", "(x: 1.1 )",
]
MOJIBAKE = ["cafÃ©", "naÃ¯ve", "â€™", "â€œquotedâ€\x9d", "Ã¼ber", "ÃƒÂ©", "Ã©tÃ©", "â€”dash", "Â£100"]
ANSI = ["\x1b[31mred\x1b[0m", "\x1b[1;32mbold green\x1b[0m"]
CONTROL_TOKENS = ["<|endoftext|>", "<|startoftext|>", "<|ENDOFTEXT|>", "&lt;|endoftext|&gt;", "<|endoftext|", "<|end of text|>"]

HAND_WRITTEN = [
    "", " ", "   \t\n  ", "a", "A", "0", "00", "1234567890", "3.14159", "1,000,000", "-273.15°C",
    "a photo of a cat", "A photo of a CAT", "a photograph of an astronaut riding a horse",
    "masterpiece, best quality, 1girl, solo, long hair, looking at viewer, smile",
    "it's", "IT'S", "It'S", "don't stop", "rock'n'roll", "'s", "''", "'", "it'ſ ok", "'Ｓ", "o'clock",
    "hello,world", "hello , world", "hello,,,world", "...", "!!!", "?!?!", "a--b", "a—b", "x_y_z",
    "snake_case_word", "CamelCaseWord", "kebab-case-word", "user@example.com", "https://example.com/a?b=c&d=e",
    "C:\\path\\to\\file.png", "#hashtag", "@mention", "$100", "100%", "50/50", "24/7", "4:3", "16:9",
    "ΣΊΣΥΦΟΣ", "ὈΔΥΣΣΕΎΣ", "ΌΣΟΣ ΣΟΦΌΣ.", "Σ", "ΑΣ ΑΣ", "İ", "ẞ", "ß", "ǅ", "Ǆ", "K", "Å", "ﬀ ﬃ ﬄ ﬅ ﬆ",
    "e\u0301", "cafe\u0301", "n\u0303", "a\u0345b", "ᾼ", "\u0345", "Å", "Å", "ｈｅｌｌｏ　ｗｏｒｌｄ", "ｶﾀｶﾅ",
    "①②③", "Ⅳ Ⅻ", "²³", "٣٤٥", "१२३", "一二三", "〇", "𝟘𝟙𝟚", "𝒜𝓁𝓅𝒽𝒶", "𝕳𝖊𝖑𝖑𝖔", "ℌ𝔢𝔩𝔩𝔬",
    "\U0001F600\U0001F600\U0001F600", "👨‍👩‍👧‍👦", "🏴󠁧󠁢󠁷󠁬󠁳󠁿", "a\u200bb", "a\u200db", "a\u00adb", "a\u2060b",
    "\u2028", "\u3000", "\u00a0\u00a0x\u00a0\u00a0", "\t\tleading tabs", "trailing newline\n",
    "<|endoftext|>", "<|startoftext|>a photo<|endoftext|>", "<|ENDOFTEXT|>", "x<|endoftext|>y",
    "&lt;|endoftext|&gt;", "&amp;lt;|endoftext|&amp;gt;", "<b>bold &amp; brave</b>", "a &lt; b",
    "line one\nline <two> &amp; three", "first &amp; line\nsecond <line> &amp;", "a\nb &amp; c",
    "(masterpiece:1.2), (best quality:1.1), [ugly], ((detailed face)), \\(literal\\)",
    "a BREAK b", "AND", "[[[[deep]]]]", "(((((((((((((((((((((((x)))))))))))))))))))))))",
    "\x1b[31mred\x1b[0m text", "tab\tseparated\tvalues", "CRLF\r\nline", "nul\x00byte",
    "supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "abababababababababababababababababababab", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
    "ǅ ǆ Ǆ ĳ Ĳ ŉ", "“curly” ‘quotes’ ‚low‛ „double‟", "ʼapostrophe", "don’t", "DON’T", "don‘t",
    "\ufeffBOM start", "end BOM\ufeff", "soft\u00adhyphen", "ＡＢＣ１２３！？", "Ｕﾀｰﾝ", "゛゜ﾞﾟ",
]


def load_simple_tokenizer():
    pkg_dir = importlib.util.find_spec("clip").submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location(
        "clip_simple_tokenizer", os.path.join(pkg_dir, "simple_tokenizer.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, os.path.join(pkg_dir, "bpe_simple_vocab_16e6.txt.gz")


def generate_prompts(rng):
    prompts = list(HAND_WRITTEN)

    def pick(lst, lo, hi):
        return [rng.choice(lst) for _ in range(rng.randint(lo, hi))]

    def sd_prompt():
        head = f"{rng.choice(['a', 'an', 'the', 'A', 'The', ''])} {rng.choice(ADJECTIVES)} {rng.choice(SUBJECTS)}"
        tail = pick(STYLES, 0, 8)
        return ", ".join([head.strip()] + tail)

    # 1. Plain SD prompts and negative prompts.
    for _ in range(500):
        prompts.append(sd_prompt())
    for _ in range(100):
        prompts.append(", ".join(pick(NEGATIVE, 3, 15)))
    # 2. Mixed case.
    for _ in range(100):
        p = sd_prompt()
        mode = rng.randrange(3)
        prompts.append(p.upper() if mode == 0 else p.title() if mode == 1 else "".join(
            c.upper() if rng.random() < 0.5 else c for c in p))
    # 3. Punctuation and symbols.
    for _ in range(150):
        words = pick(SUBJECTS + ADJECTIVES, 2, 8)
        out = []
        for w in words:
            out.append(w)
            out.append("".join(pick(SYMBOLS, 1, 3)) + rng.choice(["", " "]))
        prompts.append("".join(out))
    # 4. Numbers.
    for _ in range(120):
        n = rng.choice([
            str(rng.randint(0, 10 ** rng.randint(1, 12))), f"{rng.uniform(-1000, 1000):.{rng.randint(0, 5)}f}",
            f"{rng.randint(1, 9)}girl", f"{rng.choice([2, 4, 8, 16])}k", f"{rng.randint(1, 9999):,}",
            f"{rng.randint(1, 4096)}x{rng.randint(1, 4096)}", f"v{rng.randint(1, 9)}.{rng.randint(0, 99)}",
            f"{rng.randint(1, 12)}:{rng.randint(0, 59):02d}pm", f"#{rng.randrange(16 ** 6):06x}",
        ])
        prompts.append(f"{sd_prompt()} {n}" if rng.random() < 0.5 else n)
    # 5. Contractions, accents, other scripts, CJK, emoji.
    for _ in range(100):
        prompts.append(" ".join(pick(CONTRACTIONS, 1, 4) + pick(SUBJECTS, 0, 3)))
    for _ in range(120):
        prompts.append(" ".join(pick(ACCENTED, 1, 4) + pick(SUBJECTS + ADJECTIVES, 0, 3)))
    for _ in range(120):
        prompts.append(rng.choice([" ", ", ", ""]).join(pick(SCRIPTS, 1, 3) + pick(SUBJECTS, 0, 2)))
    for _ in range(120):
        prompts.append(rng.choice([" ", ", ", ""]).join(pick(CJK, 1, 5) + pick(SUBJECTS, 0, 2)))
    for _ in range(120):
        parts = pick(SUBJECTS, 1, 4) + pick(EMOJI, 1, 4)
        rng.shuffle(parts)
        prompts.append(rng.choice([" ", ""]).join(parts))
    # 6. HTML entities, with and without '<' in the text (ftfy only unescapes without '<').
    for _ in range(150):
        parts = pick(SUBJECTS, 1, 3) + pick(HTML, 1, 3)
        rng.shuffle(parts)
        p = " ".join(parts)
        if rng.random() < 0.3:
            p = rng.choice(["<b>", "x < y ", "<lora:a:1> "]) + p
        prompts.append(p)
    # 7. Odd whitespace and control characters.
    for _ in range(150):
        words = pick(SUBJECTS + ADJECTIVES, 1, 6)
        seps = WHITESPACE + (CONTROL if rng.random() < 0.3 else [])
        out = "".join(w + "".join(pick(seps, 1, 3)) for w in words)
        prompts.append(("".join(pick(WHITESPACE, 0, 2)) + out) if rng.random() < 0.5 else out)
    # 8. A1111 syntax characters (tokenized as plain text here).
    for _ in range(150):
        parts = pick(STYLES, 1, 4) + pick(A1111, 1, 3)
        rng.shuffle(parts)
        prompts.append(", ".join(parts))
    # 9. Very long prompts.
    for _ in range(40):
        prompts.append(", ".join(sd_prompt() for _ in range(rng.randint(5, 20))))
    # 10. Mojibake, curly quotes, ligatures, width forms, terminal escapes, control tokens.
    for _ in range(60):
        parts = pick(SUBJECTS, 1, 3) + pick(MOJIBAKE + ANSI, 1, 2)
        rng.shuffle(parts)
        prompts.append(" ".join(parts))
    for _ in range(40):
        parts = pick(SUBJECTS, 1, 4) + pick(CONTROL_TOKENS, 1, 2)
        rng.shuffle(parts)
        prompts.append(rng.choice([" ", ""]).join(parts))
    # 11. Random code points from long-established blocks (Unicode <= 6, so that the
    #     Unicode versions of Python, ftfy and Rust agree on every property).
    blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x5FF),
              (0x600, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x1E00, 0x1EFF), (0x2000, 0x206F),
              (0x2100, 0x214F), (0x2190, 0x22FF), (0x3040, 0x30FF), (0x4E00, 0x9FBB), (0xAC00, 0xD7A3),
              (0xFF00, 0xFFEF), (0x1F300, 0x1F5FF)]
    for _ in range(250):
        chars = []
        for _ in range(rng.randint(1, 24)):
            lo, hi = rng.choice(blocks)
            chars.append(chr(rng.randint(lo, hi)))
        prompts.append("".join(chars))
    # Drop exact duplicates, keep order.
    seen = set()
    unique = []
    for p in prompts:
        if p not in seen:
            seen.add(p)
            unique.append(p)
    return unique


def ftfy_step_kinds(text):
    kinds = set()
    for kind, name in ftfy.fix_and_explain(text).explanation or []:
        if kind == "apply":
            kinds.add(name)
        elif kind == "normalize":
            kinds.add("normalize_" + name)
        else:  # encode / decode / transcode: the mojibake repair of fix_encoding
            kinds.add("fix_encoding")
    return sorted(kinds)


def main():
    from transformers import CLIPTokenizer

    st, bpe_path = load_simple_tokenizer()
    reference = st.SimpleTokenizer(bpe_path)
    # The same tokenizer without the two control-token alternatives in its regex.
    literal = st.SimpleTokenizer(bpe_path)
    specials = r"<\|startoftext\|>|<\|endoftext\|>|"
    assert literal.pat.pattern.startswith(specials)
    literal.pat = regex.compile(literal.pat.pattern[len(specials):], regex.IGNORECASE)
    literal.cache = {}

    hf = CLIPTokenizer(vocab=VOCAB, merges=MERGES)
    assert len(hf.get_vocab()) == 49408
    # transformers' pipeline for the raw prompt (what diffusers does with transformers 5),
    # and the same pipeline minus its normalizer (NFC, whitespace, lowercase) for text
    # that CLIP's own cleaning has already prepared.
    hf_raw = CLIPTokenizer(vocab=VOCAB, merges=MERGES)
    hf.backend_tokenizer.normalizer = None

    def clip_clean(text):
        return st.whitespace_clean(st.basic_clean(text)).lower()

    rng = random.Random(SEED)
    prompts = generate_prompts(rng)
    cases = []
    differs_from_hf_raw = 0
    hf_checked = 0
    for p in prompts:
        ids = reference.encode(p)
        cleaned = clip_clean(p)
        hf_ids = hf(cleaned, add_special_tokens=False)["input_ids"]
        # Two known differences between the pipelines, neither about the vocabulary:
        # transformers finds control tokens anywhere in the text (CLIP only where its regex
        # starts a match), and CLIP's regex is case-insensitive ("'ſ" is a contraction,
        # U+0345 matches no alternative) where transformers' is not.
        explained = "<|" in cleaned or "\u0345" in cleaned or "'ſ" in cleaned
        if not explained:
            assert hf_ids == ids, f"transformers {hf_ids} != SimpleTokenizer {ids} for {p!r}"
            hf_checked += 1
        case = {"prompt": p, "ids": ids}
        if 49406 in ids or 49407 in ids:
            case["ids_literal"] = literal.encode(p)
        fixed = ftfy.fix_text(p)
        if fixed != p:
            case["ftfy"] = fixed
            case["ftfy_steps"] = ftfy_step_kinds(p)
        if hf_raw(p, add_special_tokens=False)["input_ids"] != ids:
            differs_from_hf_raw += 1
        cases.append(case)

    meta = {
        "generator": "tools/make_tokenizer_golden.py",
        "seed": SEED,
        "reference": "openai-clip SimpleTokenizer (ftfy installed); transformers CLIPTokenizer from assets/clip agrees",
        "transformers_checked": hf_checked,
        "versions": {
            name: importlib.metadata.version(name)
            for name in ["transformers", "tokenizers", "ftfy", "openai-clip", "regex"]
        },
        "python": sys.version.split()[0],
        "count": len(cases),
        "transformers_raw_pipeline_differs": differs_from_hf_raw,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        # One case per line: diffs stay readable; ASCII escapes keep control characters visible.
        f.write('{"meta": ' + json.dumps(meta, ensure_ascii=True) + ',\n"cases": [\n')
        f.write(",\n".join(json.dumps(c, ensure_ascii=True) for c in cases))
        f.write("\n]}\n")
    print(f"wrote {OUT}: {len(cases)} prompts")
    print(f"  with control-token text: {sum('ids_literal' in c for c in cases)}")
    print(f"  transformers CLIPTokenizer from assets/clip agrees on {hf_checked} (the rest: see comment)")
    print(f"  changed by ftfy: {sum('ftfy' in c for c in cases)}")
    print(f"  transformers 5 CLIPTokenizer on the raw prompt differs on {differs_from_hf_raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
