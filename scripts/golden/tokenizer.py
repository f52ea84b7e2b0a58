#!/usr/bin/env python3
"""Golden file for CLIP tokenization: tests/golden/clip_tokens.json.

For each prompt: the ids diffusers feeds the SD1 text encoder (transformers' CLIPTokenizer, padding="max_length",
max_length=77, truncation=True; pad <|endoftext|>) and the SD2/SD-Turbo form (pad "!"). The original OpenAI/open_clip
SimpleTokenizer (built from the same bpe_simple_vocab_16e6.txt.gz) is run too: where its tokens (before padding)
differ from transformers', the file says so, since the two Python references themselves disagree there.

Run: .venv-scripts/bin/python scripts/golden/tokenizer.py   (scripts/pyenv.sh makes the venv)
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import clip_vocab  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "golden", "clip_tokens.json")
PROMPTS = [
    "a photo of an astronaut riding a horse on mars",
    "",
    "A Portrait, in the style of Van Gogh!!",
    "cyberpunk city at night, neon lights, 8k, highly detailed",
    "don't stop believin' — it's 1999",
    "café crème brûlée, naïve façade",
    "東京の夜景 with 富士山",
    "Москва зимой, снег",
    "a cat 🐱 wearing sunglasses 😎",
    "tabs\tand\nnewlines   and    spaces",
    "UPPER lower MiXeD",
    "x" * 5,
    "(masterpiece:1.2), [best quality], {ultra-detailed}",
    "Ω≈ç√∫ µ≤≥÷ — “quotes” ‘single’",
    "fish & chips &amp; peas",
    " ".join(["a very long prompt that keeps going"] * 20),
]


def main():
    sd1 = clip_vocab.sd1_tokenizer(pad_token="<|endoftext|>")
    sd2 = clip_vocab.sd1_tokenizer(pad_token="!")
    simple = clip_vocab.load_open_clip_tokenizer_module().SimpleTokenizer(context_length=77)
    cases = []
    for prompt in PROMPTS:
        kw = dict(padding="max_length", max_length=77, truncation=True)
        ids_sd1 = sd1(prompt, **kw).input_ids
        ids_sd2 = sd2(prompt, **kw).input_ids
        oc = [int(i) for i in simple(prompt)[0].tolist()]
        unpadded = ids_sd1[: ids_sd1.index(49407) + 1]
        oc_unpadded = oc[: oc.index(49407) + 1]
        case = {"prompt": prompt, "ids_sd1": ids_sd1, "ids_sd2": ids_sd2, "open_clip_agrees": unpadded == oc_unpadded}
        if unpadded != oc_unpadded:
            case["open_clip_ids"] = oc_unpadded
        cases.append(case)
    data = {
        "generator": "scripts/golden/tokenizer.py",
        "transformers": __import__("transformers").__version__,
        "tokenizers": __import__("tokenizers").__version__,
        "cases": cases,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
    disagree = [c["prompt"] for c in cases if not c["open_clip_agrees"]]
    print(f"wrote {os.path.normpath(OUT)}: {len(cases)} prompts; open_clip differs on {disagree}")


if __name__ == "__main__":
    main()
