"""Batches of real text for the ranks: a prepared corpus (`data.corpus`), memory-mapped, as token tensors."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import torch

from pretrain_bench.data.corpus import PackedCorpus


class PackedBatches:
    """Training batches with `SyntheticTokens`' contract: step s's global batch is a function of (seed, s) only.

    Sequences are visited epoch by epoch, each epoch in its own permutation seeded by (seed, epoch), so a run sees
    every training sequence once before any repeats. Each rank reads only its own rows from the memory map.
    """

    def __init__(self, corpus: PackedCorpus, global_batch: int, seed: int, device: torch.device | str):
        self.corpus, self.global_batch, self.seed = corpus, global_batch, seed
        self.device = torch.device(device)

    def global_rows(self, step: int) -> np.ndarray:
        """Indices of the training sequences that make up the step's global batch, in batch order."""
        n = self.corpus.n_train
        positions = np.arange(step * self.global_batch, (step + 1) * self.global_batch)
        epochs = positions // n
        rows = np.empty(self.global_batch, dtype=np.int64)
        for epoch in np.unique(epochs):
            here = epochs == epoch
            rows[here] = _epoch_order(n, self.seed, int(epoch))[positions[here] % n]
        return rows

    def micro_batches(self, step: int, rank: int, world: int, micro_batch: int) -> list[torch.Tensor]:
        """This rank's rows of the step's global batch, split into accumulation micro-batches."""
        per_rank = self.global_batch // world
        rows = self.global_rows(step)[rank * per_rank:(rank + 1) * per_rank]
        return list(_to_device(self.corpus.train[rows], self.device).split(micro_batch))


def val_batches(corpus: PackedCorpus, batch_size: int, device: torch.device | str, max_sequences: int | None = None,
                rank: int = 0, world: int = 1) -> Iterator[torch.Tensor]:
    """Validation sequences in the same order at every evaluation: this rank's contiguous share of the first
    `max_sequences` (all ranks together cover each once). The last batch may be shorter than `batch_size`."""
    n = corpus.n_val if max_sequences is None else min(max_sequences, corpus.n_val)
    start, stop = n * rank // world, n * (rank + 1) // world
    for first in range(start, stop, batch_size):
        yield _to_device(corpus.val[first:min(first + batch_size, stop)], torch.device(device))


@lru_cache(maxsize=2)  # a global batch spans at most two epochs unless it is larger than the corpus
def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def _to_device(rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """int64 token ids on `device`; from pinned memory without blocking the host when the device is a GPU."""
    tensor = torch.from_numpy(rows.astype(np.int64))
    return tensor.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else tensor.to(device)
