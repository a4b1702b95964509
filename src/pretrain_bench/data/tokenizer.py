"""The corpus's tokenizer: a byte-level BPE trained on the training documents (cached), or a local tokenizer file or
directory (never downloaded), with its end-of-text token."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from pretrain_bench.config import ConfigError, DataConfig
from pretrain_bench.data.cache import build_once, cache_root, digest

if TYPE_CHECKING:
    import tokenizers

EOS_TOKEN = "<|endoftext|>"
EOS_CANDIDATES = (EOS_TOKEN, "</s>", "<eos>", "<|end_of_text|>")  # how common tokenizers spell end of text
MIN_VOCAB = 257  # 256 byte tokens + end of text


def tokenizer_spec(data: DataConfig, corpus: str, seed: int) -> dict:
    """What identifies the tokenizer without building it: the training inputs, or the tokenizer files' contents.

    A trained tokenizer sees only training documents, which depend on the split (seed, val_tokens) and the cap
    (max_tokens) as well as on the corpus and the vocabulary size.
    """
    if data.tokenizer == "train":
        return {"train": "byte-level-bpe", "vocab": data.tokenizer_vocab, "corpus": corpus, "seed": seed,
                "val_tokens": data.val_tokens, "max_tokens": data.max_tokens}
    path = Path(data.tokenizer).expanduser()
    if not path.exists():
        raise ConfigError("data.tokenizer", f"{data.tokenizer} does not exist; allowed: 'train' (a byte-level BPE "
                                            f"trained on the corpus), a local tokenizer directory or tokenizer.json")
    contents = sorted(p for p in (path.iterdir() if path.is_dir() else [path]) if p.is_file())
    return {"path": str(path.resolve()), "sha256": {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                                                    for p in contents}}


def trained_tokenizer(data: DataConfig, spec: dict, texts: Callable[[], Iterable[list[str]]]) -> tokenizers.Tokenizer:
    """The byte-level BPE for `spec`, trained once and then loaded from the cache."""
    from tokenizers import Tokenizer

    path = cache_root(data) / "tokenizers" / f"bpe{data.tokenizer_vocab}-{digest(spec)}.json"
    build_once(path, lambda tmp: train_tokenizer(texts(), data.tokenizer_vocab).save(str(tmp)))
    return Tokenizer.from_file(str(path))


def train_tokenizer(texts: Iterable[list[str]], vocab_size: int) -> tokenizers.Tokenizer:
    """A GPT-2-style byte-level BPE with an end-of-text token: any text encodes, nothing maps to unknown."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def loaded_tokenizer(name: str) -> tuple[tokenizers.Tokenizer, int]:
    """A local tokenizer.json or tokenizer directory (never downloaded), and its end-of-text id."""
    from tokenizers import Tokenizer

    path = Path(name).expanduser()
    eos_id = None
    if path.is_file():
        tokenizer = Tokenizer.from_file(str(path))
    else:
        from transformers import AutoTokenizer

        loaded = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        if not loaded.is_fast:
            raise ConfigError("data.tokenizer", f"{name} has no fast tokenizer (tokenizer.json); allowed: 'train', "
                                                f"or a directory or file with a tokenizer.json")
        tokenizer, eos_id = loaded.backend_tokenizer, loaded.eos_token_id
    if eos_id is None:
        eos_id = next((i for t in EOS_CANDIDATES if (i := tokenizer.token_to_id(t)) is not None), None)
    if eos_id is None:
        raise ConfigError("data.tokenizer", f"{name} has no end-of-text token; allowed: a tokenizer with an eos "
                                            f"token or one of {', '.join(EOS_CANDIDATES)}, or 'train'")
    return tokenizer, eos_id
