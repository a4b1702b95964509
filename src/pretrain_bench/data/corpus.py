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

import hashlib
import json
import os
import shutil
import site
import sysconfig
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pretrain_bench.config import DATA_SOURCES, ConfigError, DataConfig

if TYPE_CHECKING:
    import datasets
    import tokenizers

FORMAT_VERSION = 1  # bump when the packing or the split rule changes, so that old caches are not reused
CORPUS_SOURCES = tuple(s for s in DATA_SOURCES if s != "synthetic")
# suffix -> `datasets` builder. A .txt or .py file is one document; .py lets the installed packages (site-packages:
# 237 MB of .py in this project's own venv, against the standard library's 32 MB) be a large corpus with no download.
LOADERS = {".txt": "text", ".py": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
SUFFIXES = ", ".join(LOADERS)
STDLIB_EXCLUDED = {"site-packages", "dist-packages"}  # installed packages are not the standard library
EOS_TOKEN = "<|endoftext|>"
EOS_CANDIDATES = (EOS_TOKEN, "</s>", "<eos>", "<|end_of_text|>")  # how common tokenizers spell end of text
MIN_VOCAB = 257  # 256 byte tokens + end of text
# Byte-level BPE tokens average far fewer UTF-8 bytes than this, so this many bytes per wanted token is always enough
# text to reach a token count before the tokenizer exists.
BYTES_PER_TOKEN_BOUND = 8
DOCS_PER_BATCH = 64  # documents per read and per tokenizer call
Progress = Callable[[str, int, int], None]  # (stage, documents done, documents in the stage), for a live display


# ---- public API -------------------------------------------------------------------------------------------------


def prepare(data: DataConfig, seq_len: int, seed: int, progress: Progress | None = None) -> Path:
    """Build (or reuse) the packed cache directory of this corpus, tokenizer, split and sequence length; `progress`
    hears how far training the tokenizer and tokenising have come (nothing when the cache has the corpus)."""
    _check(data, seq_len)
    files = _source_files(data)
    corpus = _corpus_fingerprint(data, files)
    inputs = {"format": FORMAT_VERSION, "source": data.source, "corpus": corpus,
              "tokenizer": _tokenizer_spec(data, corpus, seed), "seq_len": seq_len, "seed": seed,
              "val_tokens": data.val_tokens, "max_tokens": data.max_tokens}
    out = _cache_root(data) / "packed" / _hash(inputs)
    _build_once(out, lambda tmp: _pack(data, files, inputs, tmp, progress))
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


# ---- checks and sources -----------------------------------------------------------------------------------------


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


def _source_key(data: DataConfig) -> str:
    """The config key to blame when the documents themselves are the problem."""
    return {"files": "data.paths", "hub": "data.hub_name"}.get(data.source, "data.source")


def _source_files(data: DataConfig) -> list[Path]:
    """The local files a source reads, sorted so that document order never depends on the file system."""
    if data.source in ("stdlib", "python"):
        root = Path(sysconfig.get_paths()["stdlib"])
        found = {p for p in root.rglob("*.py") if not STDLIB_EXCLUDED & set(p.relative_to(root).parts)}
        if data.source == "python":  # and every installed package's sources: a corpus several times larger
            found.update(p for d in site.getsitepackages() if Path(d).is_dir() for p in Path(d).rglob("*.py"))
        return sorted(found)
    if data.source == "hub":
        return []
    found: set[Path] = set()
    for raw in data.paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found.update(p.resolve() for p in path.rglob("*") if p.suffix.lower() in LOADERS and p.is_file())
        elif path.suffix.lower() in LOADERS and path.is_file():
            found.add(path.resolve())
        else:
            raise ConfigError("data.paths", f"{raw} is not a directory or a file of one of {SUFFIXES}")
    if not found:
        raise ConfigError("data.paths", f"no {SUFFIXES} files found at {list(data.paths)}")
    return sorted(found)


def _corpus_fingerprint(data: DataConfig, files: list[Path]) -> str:
    """What identifies the documents, from file names, sizes and modification times (no reading)."""
    stats = [(str(f), (stat := f.stat()).st_size, stat.st_mtime_ns) for f in files]
    return _hash({"source": data.source, "hub_name": data.hub_name, "text_field": data.text_field, "files": stats})


def _load_documents(data: DataConfig, files: list[Path]) -> datasets.Dataset:
    """Every document as one row of a single `text` column (Arrow-backed, so large corpora stay on disk)."""
    import datasets

    if data.source in ("stdlib", "python"):
        return datasets.Dataset.from_dict({"text": [f.read_text(encoding="utf-8", errors="replace") for f in files]})
    if data.source == "hub":
        return _text_column(datasets.load_dataset(data.hub_name, split="train"), data.text_field, data.hub_name)
    parts = []
    for builder in dict.fromkeys(LOADERS.values()):
        group = [str(f) for f in files if LOADERS[f.suffix.lower()] == builder]
        if not group:
            continue
        # A .txt or .py file is one document (sample_by="document"), not one per line.
        options = {"sample_by": "document", "encoding_errors": "replace"} if builder == "text" else {}
        loaded = datasets.load_dataset(builder, data_files=group, split="train",
                                       cache_dir=str(_cache_root(data) / "datasets"), **options)
        parts.append(_text_column(loaded, "text" if builder == "text" else data.text_field, f"the .{builder} files"))
    return datasets.concatenate_datasets(parts)


def _text_column(table: datasets.Dataset, field: str, where: str) -> datasets.Dataset:
    """Only the text column, named `text` and typed `string`, so that files of every format concatenate."""
    from datasets import Value

    if field not in table.column_names:
        raise ConfigError("data.text_field", f"{field!r} is not a column of {where}; columns found: "
                                             f"{', '.join(table.column_names)}")
    table = table.select_columns([field])
    if field != "text":
        table = table.rename_column(field, "text")
    return table if table.features["text"] == Value("string") else table.cast_column("text", Value("string"))


def _texts(docs: datasets.Dataset, order: np.ndarray) -> Iterator[list[str]]:
    """The documents at `order`, a batch at a time, so that no corpus has to fit in memory as Python strings."""
    for first in range(0, len(order), DOCS_PER_BATCH):
        yield [text or "" for text in docs[order[first:first + DOCS_PER_BATCH].tolist()]["text"]]


def _reporting(batches: Iterable[list[str]], stage: str, total: int, progress: Progress | None) -> Iterator[list[str]]:
    done = 0
    for texts in batches:
        yield texts
        done += len(texts)
        if progress:
            progress(stage, done, total)


def _byte_prefix(docs: datasets.Dataset, order: np.ndarray, budget: int) -> int:
    """How many leading documents of `order` it takes to reach `budget` UTF-8 bytes (all of them if never)."""
    count = total = 0
    for texts in _texts(docs, order):
        for text in texts:
            if total >= budget:
                return count
            total += len(text.encode("utf-8"))
            count += 1
    return count


# ---- tokenizer --------------------------------------------------------------------------------------------------


def _tokenizer_spec(data: DataConfig, corpus: str, seed: int) -> dict:
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


def _trained_tokenizer(data: DataConfig, spec: dict, texts: Callable[[], Iterable[list[str]]]) -> tokenizers.Tokenizer:
    """The byte-level BPE for `spec`, trained once and then loaded from the cache."""
    from tokenizers import Tokenizer

    path = _cache_root(data) / "tokenizers" / f"bpe{data.tokenizer_vocab}-{_hash(spec)}.json"
    _build_once(path, lambda tmp: _train_tokenizer(texts(), data.tokenizer_vocab).save(str(tmp)))
    return Tokenizer.from_file(str(path))


def _train_tokenizer(texts: Iterable[list[str]], vocab_size: int) -> tokenizers.Tokenizer:
    """A GPT-2-style byte-level BPE with an end-of-text token: any text encodes, nothing maps to unknown."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def _loaded_tokenizer(name: str) -> tuple[tokenizers.Tokenizer, int]:
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


def _encode(tokenizer: tokenizers.Tokenizer, eos_id: int, docs: datasets.Dataset, order: np.ndarray,
            stage: str = "", progress: Progress | None = None) -> Iterator[np.ndarray]:
    """Each document's token ids followed by end of text, in `order`."""
    for texts in _reporting(_texts(docs, order), stage, len(order), progress):
        for encoding in tokenizer.encode_batch(texts, add_special_tokens=False):
            yield np.array([*encoding.ids, eos_id], dtype=np.int64)


# ---- split and pack ---------------------------------------------------------------------------------------------


def _pack(data: DataConfig, files: list[Path], inputs: dict, out: Path, progress: Progress | None) -> None:
    """Hold out whole documents for validation, tokenize both splits and write them as fixed-length sequences.

    Documents are shuffled by seed. Validation is the shortest prefix of the shuffle that holds `val_tokens`,
    taken from a candidate pool sized in bytes (at most half the documents) so that a trained tokenizer can learn
    from everything outside the pool: validation text is seen neither by the tokenizer nor by training.
    """
    docs = _load_documents(data, files)
    if len(docs) < 2:
        raise ConfigError(_source_key(data), f"found {len(docs)} document(s); need at least 2 (validation holds "
                                             f"whole documents apart from training)")
    order = np.random.default_rng(inputs["seed"]).permutation(len(docs))
    pool = _byte_prefix(docs, order[:len(docs) // 2], BYTES_PER_TOKEN_BOUND * data.val_tokens)
    if data.tokenizer == "train":
        outside = order[pool:]
        if data.max_tokens is not None:
            outside = outside[:_byte_prefix(docs, outside, BYTES_PER_TOKEN_BOUND * data.max_tokens)]
        tokenizer = _trained_tokenizer(data, inputs["tokenizer"], lambda: _reporting(
            _texts(docs, outside), "training the tokenizer", len(outside), progress))
        eos_id = tokenizer.token_to_id(EOS_TOKEN)
    else:
        tokenizer, eos_id = _loaded_tokenizer(data.tokenizer)
    n_val_docs = _docs_reaching(_encode(tokenizer, eos_id, docs, order[:pool]), data.val_tokens)

    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    dtype, seq_len = token_dtype(vocab_size), inputs["seq_len"]
    out.mkdir(parents=True)
    val = _encode(tokenizer, eos_id, docs, order[:n_val_docs], "tokenising validation", progress)
    n_val, _ = _write_sequences(out / "val.bin", val, dtype, seq_len)
    train = _encode(tokenizer, eos_id, docs, order[n_val_docs:], "tokenising training", progress)
    n_train, n_train_docs = _write_sequences(out / "train.bin", train, dtype, seq_len, data.max_tokens)
    if not (n_val and n_train):
        raise ConfigError(_source_key(data), f"the corpus is too small for model.seq_len={seq_len}: {n_train} "
                                             f"training and {n_val} validation sequences; add documents or lower "
                                             f"model.seq_len / data.val_tokens")
    tokenizer.save(str(out / "tokenizer.json"))  # for decoding samples; the cache directory is self-contained
    meta = {"fingerprint": _hash(inputs), "vocab_size": vocab_size, "eos_id": eos_id, "dtype": dtype.name,
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


# ---- helpers ----------------------------------------------------------------------------------------------------


def _cache_root(data: DataConfig) -> Path:
    return Path(data.cache_dir).expanduser()


def _hash(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _build_once(target: Path, build: Callable[[Path], None]) -> None:
    """Build `target` unless it exists: under a file lock, into a temporary path renamed into place, so concurrent
    preparers wait for one another and reuse the result, and a crash never leaves a half-written cache behind."""
    from filelock import FileLock

    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{target}.lock"):
        if target.exists():
            return
        tmp = target.with_name(f".{target.name}.tmp")
        if tmp.is_dir():  # left behind by a preparer that crashed
            shutil.rmtree(tmp)
        else:
            tmp.unlink(missing_ok=True)
        build(tmp)
        os.replace(tmp, target)
