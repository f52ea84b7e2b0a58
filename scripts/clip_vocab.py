"""The SD1 CLIP tokenizer, built offline from the original OpenAI BPE vocabulary.

The vocabulary file `bpe_simple_vocab_16e6.txt.gz` is the one OpenAI's CLIP and open_clip ship; PyPI's
`open_clip_torch` wheel carries it, so no model hub is needed. From it we derive the same `vocab` and
`merges` that `openai/clip-vit-large-patch14` publishes (49408 tokens) and let transformers' CLIPTokenizer
(the class diffusers uses) write a `tokenizer.json` the Rust `tokenizers` crate loads.
"""
import gzip
import importlib.util
import os



def _open_clip_dir():
    spec = importlib.util.find_spec("open_clip")
    return os.path.dirname(spec.origin)


def bpe_path():
    return os.path.join(_open_clip_dir(), "bpe_simple_vocab_16e6.txt.gz")


def load_open_clip_tokenizer_module():
    """open_clip/tokenizer.py loaded by path: the package __init__ imports torchvision, which we do not need."""
    path = os.path.join(_open_clip_dir(), "tokenizer.py")
    spec = importlib.util.spec_from_file_location("open_clip_tokenizer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bytes_to_unicode():
    """GPT-2/CLIP byte -> printable unicode table (same as open_clip.tokenizer.bytes_to_unicode)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(n) for n in cs]))


def vocab_and_merges():
    lines = gzip.open(bpe_path()).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408, len(vocab)
    return {tok: i for i, tok in enumerate(vocab)}, merges


def sd1_tokenizer(pad_token="<|endoftext|>"):
    """transformers' CLIPTokenizer as diffusers builds it for SD1.x (pad = <|endoftext|>) or SD2.x (pad = '!')."""
    from transformers import CLIPTokenizer

    vocab, merges = vocab_and_merges()
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token, model_max_length=77)
