"""Real-text corpora: loading, a held-out split that never leaks, deterministic packing, caches that are reused,
and training batches that do not depend on how the global batch is split. All data is made here; nothing is
downloaded."""

from __future__ import annotations

import json
import random
import re
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from tokenizers import Tokenizer

from pretrain_bench.config import DataConfig
from pretrain_bench.data import corpus, tokenizer
from pretrain_bench.data import documents as docs_module
from pretrain_bench.train import text_batches

WORDS = "the model trains on tokens while loss falls slowly and every batch holds whole sequences".split()
MARKER = re.compile(r"doc\d{4}marker")
SEQ_LEN = 32


def documents(n: int, seed: int = 0) -> list[str]:
    """Documents of a few lines each, every one starting with its own marker word."""
    rng = random.Random(seed)
    return [f"doc{i:04d}marker " + "\n".join(" ".join(rng.choices(WORDS, k=rng.randint(5, 15)))
                                            for _ in range(rng.randint(3, 8))) for i in range(n)]


def write_txt(folder, docs):
    folder.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(docs):
        (folder / f"{i:04d}.txt").write_text(doc)
    return folder


def data_config(tmp_path, paths, **overrides) -> DataConfig:
    settings = {"source": "files", "paths": [str(p) for p in paths], "tokenizer_vocab": 400, "val_tokens": 1024,
                "cache_dir": str(tmp_path / "cache")}
    return DataConfig(**{**settings, **overrides})


def decoded(path, split: str) -> str:
    packed = corpus.PackedCorpus.open(path)
    return Tokenizer.from_file(str(path / "tokenizer.json")).decode(getattr(packed, split).ravel().tolist())


def test_split_never_leaks_into_training_or_the_tokenizer(tmp_path, monkeypatch):
    docs = documents(200)
    seen_by_tokenizer = []
    train_tokenizer = tokenizer.train_tokenizer

    def recording(texts, vocab_size):
        batches = [list(batch) for batch in texts]
        seen_by_tokenizer.extend(text for batch in batches for text in batch)
        return train_tokenizer(batches, vocab_size)

    monkeypatch.setattr(tokenizer, "train_tokenizer", recording)
    path = corpus.prepare(data_config(tmp_path, [write_txt(tmp_path / "docs", docs)]), SEQ_LEN, seed=0)

    meta = json.loads((path / "meta.json").read_text())
    val, train = set(MARKER.findall(decoded(path, "val"))), set(MARKER.findall(decoded(path, "train")))
    tokenizer_text = set(MARKER.findall(" ".join(seen_by_tokenizer)))
    assert 1024 <= meta["n_val"] * SEQ_LEN < 2 * 1024  # about val_tokens, in whole documents
    assert len(val) >= meta["val_documents"] - 1  # only the last document's tail may be cut with the ragged end
    assert val and train and not val & train and not val & tokenizer_text
    assert meta["val_documents"] + meta["train_documents"] == len(docs)


def test_packing_is_deterministic_and_seeded(tmp_path):
    folder = write_txt(tmp_path / "docs", documents(120))
    paths = [corpus.prepare(data_config(tmp_path / run, [folder]), SEQ_LEN, seed) for run, seed in
             (("a", 0), ("b", 0), ("c", 1))]
    for name in ("train.bin", "val.bin", "meta.json", "tokenizer.json"):
        assert (paths[0] / name).read_bytes() == (paths[1] / name).read_bytes(), name
    assert (paths[0] / "val.bin").read_bytes() != (paths[2] / "val.bin").read_bytes()
    packed = corpus.PackedCorpus.open(paths[0])
    assert packed.train.dtype == np.uint16 and packed.vocab_size <= 400 and packed.seq_len == SEQ_LEN
    assert (paths[0] / "train.bin").stat().st_size == packed.n_train * SEQ_LEN * 2
    assert packed.eos_id == 0 and (packed.train == packed.eos_id).any()


def test_token_dtype_is_the_narrowest_that_fits():
    assert corpus.token_dtype(400) == np.uint16 and corpus.token_dtype(2**16) == np.uint16
    assert corpus.token_dtype(2**16 + 1) == np.uint32


def test_txt_py_jsonl_parquet_and_directories_load_one_document_per_record(tmp_path):
    docs = documents(90)
    write_txt(tmp_path / "docs" / "nested" / "deeper", docs[:25])  # found recursively; a .txt file is one document
    for i, doc in enumerate(docs[25:30]):  # so is a .py file: installed packages as a corpus
        (tmp_path / "docs" / f"module{i}.py").write_text(doc)
    (tmp_path / "docs" / "notes.md").write_text("not a corpus file")
    with open(tmp_path / "records.jsonl", "w") as f:
        for doc in docs[30:60]:
            f.write(json.dumps({"body": doc, "id": 1}) + "\n")
    pq.write_table(pa.table({"body": pa.array(docs[60:], type=pa.large_string())}), tmp_path / "records.parquet")
    data = data_config(tmp_path, [tmp_path / "docs", tmp_path / "records.jsonl", tmp_path / "records.parquet"],
                       text_field="body")
    meta = json.loads((corpus.prepare(data, SEQ_LEN, seed=0) / "meta.json").read_text())
    assert meta["val_documents"] + meta["train_documents"] == len(docs)


def test_caches_are_reused_without_retraining_or_retokenizing(tmp_path, monkeypatch):
    data = data_config(tmp_path, [write_txt(tmp_path / "docs", documents(100))])
    first = corpus.prepare(data, SEQ_LEN, seed=0)

    def fail(*args, **kwargs):
        raise AssertionError("should have come from the cache")

    monkeypatch.setattr(tokenizer, "train_tokenizer", fail)
    other_length = corpus.prepare(data, SEQ_LEN // 2, seed=0)  # new packing, same tokenizer
    assert other_length != first and (other_length / "tokenizer.json").read_bytes() == (
        first / "tokenizer.json").read_bytes()
    monkeypatch.setattr(docs_module, "load_documents", fail)
    assert corpus.prepare(data, SEQ_LEN, seed=0) == first
    monkeypatch.undo()
    with open(tmp_path / "docs" / "0000.txt", "a") as f:
        f.write(" an edit")
    assert corpus.prepare(data, SEQ_LEN, seed=0) != first  # a changed file is a new corpus


def test_concurrent_preparers_share_one_cache(tmp_path):
    data = data_config(tmp_path, [write_txt(tmp_path / "docs", documents(100))])
    results = []
    threads = [threading.Thread(target=lambda: results.append(corpus.prepare(data, SEQ_LEN, seed=0)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len(set(results)) == 1
    assert corpus.PackedCorpus.open(results[0]).n_train > 0
    assert not list((tmp_path / "cache" / "packed").glob(".*.tmp"))


def test_local_tokenizer_file_and_directory_give_the_trained_tokens(tmp_path):
    from transformers import PreTrainedTokenizerFast

    folder = write_txt(tmp_path / "docs", documents(100))
    trained = corpus.prepare(data_config(tmp_path / "a", [folder]), SEQ_LEN, seed=0)
    directory = tmp_path / "tokenizer"
    PreTrainedTokenizerFast(tokenizer_file=str(trained / "tokenizer.json"), eos_token=tokenizer.EOS_TOKEN
                            ).save_pretrained(directory)
    for name in (trained / "tokenizer.json", directory):
        loaded = corpus.prepare(data_config(tmp_path / "b", [folder], tokenizer=str(name)), SEQ_LEN, seed=0)
        for split in ("train.bin", "val.bin"):
            assert (loaded / split).read_bytes() == (trained / split).read_bytes()


def test_stdlib_source_is_python_code(tmp_path):
    data = DataConfig(source="stdlib", tokenizer_vocab=300, val_tokens=2048, max_tokens=20_000,
                      cache_dir=str(tmp_path))
    path = corpus.prepare(data, 64, seed=0)
    packed = corpus.PackedCorpus.open(path)
    assert packed.n_train == 20_000 // 64 and packed.n_val >= 2048 // 64
    assert "def " in decoded(path, "train") and "import" in decoded(path, "val")


def test_python_source_adds_the_installed_packages_to_the_standard_library():
    import site

    stdlib = docs_module.source_files(DataConfig(source="stdlib"))
    python = docs_module.source_files(DataConfig(source="python"))
    assert set(stdlib) < set(python) and python == sorted(python)
    packages = [Path(d) for d in site.getsitepackages()]
    assert any(p.is_relative_to(d) for p in python for d in packages) and not any(
        p.is_relative_to(d) for p in stdlib for d in packages)


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("batches")
    return corpus.PackedCorpus.open(corpus.prepare(data_config(tmp, [write_txt(tmp / "docs", documents(150))]),
                                                   SEQ_LEN, seed=0))


def global_batch(packed, seed, step, world, micro_batch, global_size=8):
    batches = text_batches.PackedBatches(packed, global_size, seed, "cpu")
    return torch.cat([m for rank in range(world) for m in batches.micro_batches(step, rank, world, micro_batch)])


def test_batches_do_not_depend_on_world_size_or_micro_batch_split(packed):
    for step in range(0, 3 * packed.n_train // 8 + 1, 5):  # crosses epoch boundaries
        reference = global_batch(packed, 0, step, 1, 8)
        rows = text_batches.PackedBatches(packed, 8, 0, "cpu").global_rows(step)
        assert torch.equal(reference, torch.from_numpy(packed.train[rows].astype(np.int64)))
        for world, micro in ((2, 1), (2, 4), (4, 2), (8, 1)):
            assert torch.equal(global_batch(packed, 0, step, world, micro), reference)
    micro = text_batches.PackedBatches(packed, 8, 0, "cpu").micro_batches(0, 1, 2, 2)
    assert [m.shape for m in micro] == [(2, SEQ_LEN)] * 2 and micro[0].dtype == torch.long


def test_batches_follow_the_seed_and_cover_an_epoch(packed):
    assert torch.equal(global_batch(packed, 3, 7, 2, 2), global_batch(packed, 3, 7, 1, 8))
    assert not torch.equal(global_batch(packed, 3, 7, 1, 8), global_batch(packed, 4, 7, 1, 8))
    batches = text_batches.PackedBatches(packed, 8, 0, "cpu")
    first_epoch = np.concatenate([batches.global_rows(s) for s in range(packed.n_train // 8)])
    assert len(set(first_epoch.tolist())) == len(first_epoch)  # no sequence repeats within an epoch


def test_validation_batches_are_fixed_and_sharded_by_rows(packed):
    whole = torch.cat(list(text_batches.val_batches(packed, 3, "cpu")))
    assert torch.equal(whole, torch.from_numpy(packed.val.astype(np.int64)))
    shards = [torch.cat(list(text_batches.val_batches(packed, 2, "cpu", max_sequences=5, rank=r, world=2)))
              for r in range(2)]
    assert torch.equal(torch.cat(shards), whole[:5]) and [len(s) for s in shards] == [2, 3]


@pytest.mark.parametrize(("overrides", "key"), [
    ({"source": "synthetic"}, "data.source"),
    ({"source": "wikipedia"}, "data.source"),
    ({"paths": []}, "data.paths"),
    ({"source": "hub", "hub_name": None}, "data.hub_name"),
    ({"tokenizer_vocab": 100}, "data.tokenizer_vocab"),
    ({"val_tokens": 8}, "data.val_tokens"),
    ({"tokenizer": "/nonexistent/tokenizer"}, "data.tokenizer"),
])
def test_bad_settings_name_the_key(tmp_path, overrides, key):
    settings = {"paths": [write_txt(tmp_path / "docs", documents(4))], **overrides}
    with pytest.raises(ValueError, match=re.escape(key)):
        corpus.prepare(data_config(tmp_path, settings.pop("paths"), **settings), SEQ_LEN, seed=0)


def test_bad_files_name_the_key(tmp_path):
    (tmp_path / "empty").mkdir()
    write_txt(tmp_path / "one", ["a single document"])
    write_txt(tmp_path / "tiny", ["two short", "documents"])
    (tmp_path / "table.csv").write_text("a,b\n")
    with open(tmp_path / "records.jsonl", "w") as f:
        f.write(json.dumps({"content": "no text field here"}) + "\n")
    for paths, key, says in (([tmp_path / "empty"], "data.paths", "no .txt, .py, .jsonl, .json, .parquet files"),
                             ([tmp_path / "missing"], "data.paths", "is not a directory"),
                             ([tmp_path / "table.csv"], "data.paths", "is not a directory"),
                             ([tmp_path / "one"], "data.paths", "need at least 2"),
                             ([tmp_path / "tiny"], "data.paths", "too small"),
                             ([tmp_path / "records.jsonl"], "data.text_field", "columns found: content")):
        with pytest.raises(ValueError, match=re.escape(key)) as error:
            corpus.prepare(data_config(tmp_path, paths), SEQ_LEN, seed=0)
        assert says in str(error.value)
