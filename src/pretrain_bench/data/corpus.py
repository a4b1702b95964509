"""Real text for training and validation: documents, a tokenizer, and fixed-length token sequences on disk.

`prepare` runs once, in the launching process: it reads the documents (local files, the running interpreter's
standard library, or a `datasets` hub name when the user asks for one), holds out whole documents for validation,
trains or loads a tokenizer, and packs each split into a flat memory-mapped token file. The result is cached under a
hash of every input that determines the tokens, so a second run (or a concurrent one) reuses it. Ranks only open
the cache (`PackedCorpus.open`) and read their rows: they never tokenize.

The ranks read batches through `train.text_batches`, which, like the synthetic batches, makes the global batch of a
step a pure function of (seed, step), so every strategy, world size and micro-batch split trains on the same
sequences.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pretrain_bench.config import DATA_SOURCES, ConfigError, DataConfig
from pretrain_bench.data import cache, documents
from pretrain_bench.data import tokenizer as tokenizer_
from pretrain_bench.data.documents import SUFFIXES, Progress
from pretrain_bench.data.tokenizer import EOS_TOKEN, MIN_VOCAB

if TYPE_CHECKING:
    import datasets
    import tokenizers

FORMAT_VERSION = 1  # bump when the packing or the split rule changes, so that old caches are not reused
CORPUS_SOURCES = tuple(s for s in DATA_SOURCES if s != "synthetic")
# Byte-level BPE tokens average far fewer UTF-8 bytes than this, so this many bytes per wanted token is always enough
# text to reach a token count before the tokenizer exists.
BYTES_PER_TOKEN_BOUND = 8


# ---- public API -------------------------------------------------------------------------------------------------


def prepare(data: DataConfig, seq_len: int, seed: int, progress: Progress | None = None) -> Path:
    """Build (or reuse) the packed cache directory of this corpus, tokenizer, split and sequence length; `progress`
    hears how far training the tokenizer and tokenising have come (nothing when the cache has the corpus)."""
    _check(data, seq_len)
    files = documents.source_files(data)
    corpus = documents.corpus_fingerprint(data, files)
    inputs = {"format": FORMAT_VERSION, "source": data.source, "corpus": corpus,
              "tokenizer": tokenizer_.tokenizer_spec(data, corpus, seed), "seq_len": seq_len, "seed": seed,
              "val_tokens": data.val_tokens, "max_tokens": data.max_tokens}
    out = cache.cache_root(data) / "packed" / cache.digest(inputs)
    cache.build_once(out, lambda tmp: _pack(data, files, inputs, tmp, progress))
    return out


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned type that holds every token id: half the disk and page cache for most vocabularies."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


@dataclass(frozen=True, eq=False)
class PackedCorpus:
    """A prepared cache directory, memory-mapped: cheap to open in every rank, pages read on demand."""

    path: Path
    vocab_size: int
    eos_id: int
    seq_len: int
    train: np.memmap  # (n_train, seq_len)
    val: np.memmap  # (n_val, seq_len)

    @classmethod
    def open(cls, path: str | Path) -> PackedCorpus:
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        dtype, seq_len = np.dtype(meta["dtype"]), meta["seq_len"]
        train, val = (np.memmap(path / f"{split}.bin", dtype=dtype, mode="r", shape=(meta[f"n_{split}"], seq_len))
                      for split in ("train", "val"))
        return cls(path, meta["vocab_size"], meta["eos_id"], seq_len, train, val)

    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def n_val(self) -> int:
        return len(self.val)


# ---- checks -------------------------------------------------------------------------------------------------------


def _check(data: DataConfig, seq_len: int) -> None:
    """Reject what cannot be prepared before reading any text."""
    if data.source not in CORPUS_SOURCES:
        raise ConfigError("data.source", f"{data.source!r} has no text to prepare; allowed values: "
                                         f"{', '.join(CORPUS_SOURCES)}")
    if data.source == "files" and not data.paths:
        raise ConfigError("data.paths", f"source=files needs files or directories of {SUFFIXES}: set data.paths=[...]")
    if data.source == "hub" and not data.hub_name:
        raise ConfigError("data.hub_name", "source=hub needs a `datasets` hub name, e.g. data.hub_name=<owner/name>")
    if data.tokenizer == "train" and data.tokenizer_vocab < MIN_VOCAB:
        raise ConfigError("data.tokenizer_vocab", f"must be ≥ {MIN_VOCAB} (256 byte tokens + end of text), "
                                                  f"got {data.tokenizer_vocab}")
    if data.val_tokens < seq_len:
        raise ConfigError("data.val_tokens", f"must be ≥ model.seq_len ({seq_len}) so that validation holds a "
                                             f"sequence, got {data.val_tokens}")
    if data.max_tokens is not None and data.max_tokens < seq_len:
        raise ConfigError("data.max_tokens", f"must be null or ≥ model.seq_len ({seq_len}), got {data.max_tokens}")


def _encode(tokenizer: tokenizers.Tokenizer, eos_id: int, docs: datasets.Dataset, order: np.ndarray,
            stage: str = "", progress: Progress | None = None) -> Iterator[np.ndarray]:
    """Each document's token ids followed by end of text, in `order`."""
    for texts in documents.reporting(documents.read_texts(docs, order), stage, len(order), progress):
        for encoding in tokenizer.encode_batch(texts, add_special_tokens=False):
            yield np.array([*encoding.ids, eos_id], dtype=np.int64)


# ---- split and pack ---------------------------------------------------------------------------------------------


def _pack(data: DataConfig, files: list[Path], inputs: dict, out: Path, progress: Progress | None) -> None:
    """Hold out whole documents for validation, tokenize both splits and write them as fixed-length sequences.

    Documents are shuffled by seed. Validation is the shortest prefix of the shuffle that holds `val_tokens`,
    taken from a candidate pool sized in bytes (at most half the documents) so that a trained tokenizer can learn
    from everything outside the pool: validation text is seen neither by the tokenizer nor by training.
    """
    docs = documents.load_documents(data, files)
    if len(docs) < 2:
        raise ConfigError(documents.source_key(data), f"found {len(docs)} document(s); need at least 2 (validation "
                                                      f"holds whole documents apart from training)")
    order = np.random.default_rng(inputs["seed"]).permutation(len(docs))
    pool = documents.byte_prefix(docs, order[:len(docs) // 2], BYTES_PER_TOKEN_BOUND * data.val_tokens)
    if data.tokenizer == "train":
        outside = order[pool:]
        if data.max_tokens is not None:
            outside = outside[:documents.byte_prefix(docs, outside, BYTES_PER_TOKEN_BOUND * data.max_tokens)]
        tokenizer = tokenizer_.trained_tokenizer(data, inputs["tokenizer"], lambda: documents.reporting(
            documents.read_texts(docs, outside), "training the tokenizer", len(outside), progress))
        eos_id = tokenizer.token_to_id(EOS_TOKEN)
    else:
        tokenizer, eos_id = tokenizer_.loaded_tokenizer(data.tokenizer)
    n_val_docs = _docs_reaching(_encode(tokenizer, eos_id, docs, order[:pool]), data.val_tokens)

    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    dtype, seq_len = token_dtype(vocab_size), inputs["seq_len"]
    out.mkdir(parents=True)
    val = _encode(tokenizer, eos_id, docs, order[:n_val_docs], "tokenising validation", progress)
    n_val, _ = _write_sequences(out / "val.bin", val, dtype, seq_len)
    train = _encode(tokenizer, eos_id, docs, order[n_val_docs:], "tokenising training", progress)
    n_train, n_train_docs = _write_sequences(out / "train.bin", train, dtype, seq_len, data.max_tokens)
    if not (n_val and n_train):
        raise ConfigError(documents.source_key(data), f"the corpus is too small for model.seq_len={seq_len}: "
                                                      f"{n_train} training and {n_val} validation sequences; add "
                                                      f"documents or lower model.seq_len / data.val_tokens")
    tokenizer.save(str(out / "tokenizer.json"))  # for decoding samples; the cache directory is self-contained
    meta = {"fingerprint": cache.digest(inputs), "vocab_size": vocab_size, "eos_id": eos_id, "dtype": dtype.name,
            "seq_len": seq_len, "n_train": n_train, "n_val": n_val, "train_documents": n_train_docs,
            "val_documents": n_val_docs, "inputs": inputs}
    (out / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _docs_reaching(stream: Iterator[np.ndarray], tokens: int) -> int:
    """How many documents of `stream` it takes to hold `tokens` tokens (all of them if never)."""
    count = total = 0
    for ids in stream:
        total += len(ids)
        count += 1
        if total >= tokens:
            break
    return count


def _write_sequences(path: Path, stream: Iterator[np.ndarray], dtype: np.dtype, seq_len: int,
                     max_tokens: int | None = None) -> tuple[int, int]:
    """Append documents' tokens to a flat file, stop at `max_tokens`, cut the ragged tail off.

    Returns the number of whole sequences and of documents (partly) used.
    """
    total = docs = 0
    with open(path, "wb") as f:
        for ids in stream:
            if max_tokens is not None:
                ids = ids[:max_tokens - total]
            f.write(ids.astype(dtype).tobytes())
            total, docs = total + len(ids), docs + 1
            if max_tokens is not None and total >= max_tokens:
                break
        sequences = total // seq_len
        f.truncate(sequences * seq_len * dtype.itemsize)
    return sequences, docs


