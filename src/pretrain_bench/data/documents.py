"""Documents of a real-text corpus: which local files a source reads, loaded as one `text` column (Arrow-backed,
so large corpora stay on disk), and read back a batch at a time."""

from __future__ import annotations

import site
import sysconfig
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pretrain_bench.config import ConfigError, DataConfig
from pretrain_bench.data.cache import cache_root, digest

if TYPE_CHECKING:
    import datasets

# suffix -> `datasets` builder. A .txt or .py file is one document; .py lets the installed packages (site-packages:
# 237 MB of .py in this project's own venv, against the standard library's 32 MB) be a large corpus with no download.
LOADERS = {".txt": "text", ".py": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
SUFFIXES = ", ".join(LOADERS)
STDLIB_EXCLUDED = {"site-packages", "dist-packages"}  # installed packages are not the standard library
DOCS_PER_BATCH = 64  # documents per read and per tokenizer call
Progress = Callable[[str, int, int], None]  # (stage, documents done, documents in the stage), for a live display


def source_key(data: DataConfig) -> str:
    """The config key to blame when the documents themselves are the problem."""
    return {"files": "data.paths", "hub": "data.hub_name"}.get(data.source, "data.source")


def source_files(data: DataConfig) -> list[Path]:
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


def corpus_fingerprint(data: DataConfig, files: list[Path]) -> str:
    """What identifies the documents, from file names, sizes and modification times (no reading)."""
    stats = [(str(f), (stat := f.stat()).st_size, stat.st_mtime_ns) for f in files]
    return digest({"source": data.source, "hub_name": data.hub_name, "text_field": data.text_field, "files": stats})


def load_documents(data: DataConfig, files: list[Path]) -> datasets.Dataset:
    """Every document as one row of a single `text` column (Arrow-backed, so large corpora stay on disk)."""
    import datasets

    if data.source in ("stdlib", "python"):
        return datasets.Dataset.from_dict({"text": [f.read_text(encoding="utf-8", errors="replace") for f in files]})
    if data.source == "hub":
        return text_column(datasets.load_dataset(data.hub_name, split="train"), data.text_field, data.hub_name)
    parts = []
    for builder in dict.fromkeys(LOADERS.values()):
        group = [str(f) for f in files if LOADERS[f.suffix.lower()] == builder]
        if not group:
            continue
        # A .txt or .py file is one document (sample_by="document"), not one per line.
        options = {"sample_by": "document", "encoding_errors": "replace"} if builder == "text" else {}
        loaded = datasets.load_dataset(builder, data_files=group, split="train",
                                       cache_dir=str(cache_root(data) / "datasets"), **options)
        parts.append(text_column(loaded, "text" if builder == "text" else data.text_field, f"the .{builder} files"))
    return datasets.concatenate_datasets(parts)


def text_column(table: datasets.Dataset, field: str, where: str) -> datasets.Dataset:
    """Only the text column, named `text` and typed `string`, so that files of every format concatenate."""
    from datasets import Value

    if field not in table.column_names:
        raise ConfigError("data.text_field", f"{field!r} is not a column of {where}; columns found: "
                                             f"{', '.join(table.column_names)}")
    table = table.select_columns([field])
    if field != "text":
        table = table.rename_column(field, "text")
    return table if table.features["text"] == Value("string") else table.cast_column("text", Value("string"))


def read_texts(docs: datasets.Dataset, order: np.ndarray) -> Iterator[list[str]]:
    """The documents at `order`, a batch at a time, so that no corpus has to fit in memory as Python strings."""
    for first in range(0, len(order), DOCS_PER_BATCH):
        yield [text or "" for text in docs[order[first:first + DOCS_PER_BATCH].tolist()]["text"]]


def reporting(batches: Iterable[list[str]], stage: str, total: int, progress: Progress | None) -> Iterator[list[str]]:
    done = 0
    for texts in batches:
        yield texts
        done += len(texts)
        if progress:
            progress(stage, done, total)


def byte_prefix(docs: datasets.Dataset, order: np.ndarray, budget: int) -> int:
    """How many leading documents of `order` it takes to reach `budget` UTF-8 bytes (all of them if never)."""
    count = total = 0
    for texts in read_texts(docs, order):
        for text in texts:
            if total >= budget:
                return count
            total += len(text.encode("utf-8"))
            count += 1
    return count
