"""Synthetic batches for the training loop: tokens, masked tokens and images.

Every source makes a step's global batch a pure function of (seed, step): every strategy, world size and
micro-batch split trains on the same samples, which is what makes loss curves comparable across them. Batches are
made on the compute device, so no host-to-device copy or data loader sits in the measured step.
"""

from __future__ import annotations

from typing import Protocol

import torch

from pretrain_bench.config import ModelConfig

IGNORE = -100  # label of positions without a loss (the transformers convention)


class BatchSource(Protocol):
    """What the training loop needs from its data: this rank's accumulation micro-batches of a step, each a token
    tensor or a dict of model inputs. Synthetic sources here and real text (`text_batches.PackedBatches`) fit it."""

    def micro_batches(self, step: int, rank: int, world: int, micro_batch: int) -> list[torch.Tensor | dict]: ...


def as_inputs(batch: torch.Tensor | dict) -> dict:
    """Model keyword arguments: a bare token tensor is a causal-LM batch whose labels are its inputs."""
    return batch if isinstance(batch, dict) else {"input_ids": batch, "labels": batch}


class _Source:
    """Splits a step's global batch (a token tensor, or a dict of row-aligned tensors) into this rank's
    accumulation micro-batches."""

    def __init__(self, global_batch: int, seed: int, device: torch.device):
        self.global_batch, self.seed, self.device = global_batch, seed, device
        self.generator = torch.Generator(device=device)

    def _seeded(self, step: int, stream: int = 0) -> torch.Generator:
        return self.generator.manual_seed(self.seed * 1_000_003 + step + stream * 7_919_000_003)

    def global_batch_at(self, step: int):
        raise NotImplementedError

    def rows_at(self, step: int, rows: slice):
        """Rows of the step's global batch (a source whose rows are costly makes only these)."""
        batch = self.global_batch_at(step)
        return batch[rows] if isinstance(batch, torch.Tensor) else {k: v[rows] for k, v in batch.items()}

    def micro_batches(self, step: int, rank: int, world: int, micro_batch: int) -> list:
        """This rank's rows of the step's global batch, split into accumulation micro-batches."""
        per_rank = self.global_batch // world
        batch = self.rows_at(step, slice(rank * per_rank, (rank + 1) * per_rank))
        if isinstance(batch, torch.Tensor):
            return list(batch.split(micro_batch))
        parts = {k: v.split(micro_batch) for k, v in batch.items()}
        return [dict(zip(parts, values, strict=True)) for values in zip(*parts.values(), strict=True)]


class SyntheticTokens(_Source):
    """Uniform random token ids; a causal LM's labels are its inputs."""

    def __init__(self, vocab_size: int, seq_len: int, global_batch: int, seed: int, device: torch.device):
        super().__init__(global_batch, seed, device)
        self.vocab_size, self.seq_len = vocab_size, seq_len

    def global_batch_at(self, step: int) -> torch.Tensor:
        return torch.randint(self.vocab_size, (self.global_batch, self.seq_len), generator=self._seeded(step),
                             device=self.device)


class MaskedTokens(SyntheticTokens):
    """BERT/RoBERTa masked-LM batches: of each sequence's tokens, round(mask_prob·T) are chosen; of those, 80 %
    become the mask token, 10 % a random token and 10 % stay; only chosen positions carry a label.

    Written here rather than taken from transformers' DataCollatorForLanguageModeling, which needs a tokenizer object
    and draws a Bernoulli number of masks per sequence on the host. A fixed count per sequence (as fairseq, which
    trained RoBERTa, draws it, rounded) gives every micro-batch the same number of labelled tokens, so the mean loss
    of any micro-batch split equals the global batch's, and strategies can be compared exactly. The mask token is
    the last id of the vocabulary; the text tokens are drawn from the others.
    """

    def __init__(self, vocab_size: int, seq_len: int, global_batch: int, seed: int, device: torch.device,
                 mask_prob: float):
        super().__init__(vocab_size - 1, seq_len, global_batch, seed, device)
        self.mask_id, self.n_masked = vocab_size - 1, max(1, round(mask_prob * seq_len))

    def global_batch_at(self, step: int) -> dict[str, torch.Tensor]:
        ids = super().global_batch_at(step)
        g = self._seeded(step, stream=1)
        chosen = torch.rand(ids.shape, generator=g, device=self.device).argsort(dim=1)[:, :self.n_masked]
        labels = torch.full_like(ids, IGNORE).scatter_(1, chosen, ids.gather(1, chosen))
        fate = torch.rand(chosen.shape, generator=g, device=self.device)
        random_ids = torch.randint(self.vocab_size, chosen.shape, generator=g, device=self.device)
        replaced = torch.where(fate < 0.8, self.mask_id, torch.where(fate < 0.9, random_ids, ids.gather(1, chosen)))
        return {"input_ids": ids.scatter(1, chosen, replaced), "labels": labels}


class SyntheticImages(_Source):
    """Random images and labels for image classification, kept off the critical path.

    A pool of `pool` random images is made once, at set-up; row r of step s is pool image (s·G + r) mod pool, with
    a random label. The step's data work is one on-device gather, so the measurement is the model's, as a data
    pipeline that keeps up (decoding and augmenting on CPU workers, prefetched) would give; the rate it must keep
    up with is the record's images/s.
    """

    def __init__(self, m: ModelConfig, global_batch: int, seed: int, device: torch.device, pool: int = 64):
        super().__init__(global_batch, seed, device)
        self.num_classes = m.num_classes
        self.pool = torch.randn((pool, m.num_channels, m.image_size, m.image_size), generator=self._seeded(-1),
                                device=device)

    def rows_at(self, step: int, rows: slice) -> dict[str, torch.Tensor]:
        index = torch.arange(rows.start, rows.stop, device=self.device)
        labels = torch.randint(self.num_classes, (self.global_batch,), generator=self._seeded(step),
                               device=self.device)
        return {"pixel_values": self.pool[(step * self.global_batch + index) % len(self.pool)],
                "labels": labels[rows]}


def synthetic(m: ModelConfig, seed: int, device: torch.device) -> _Source:
    """The synthetic source that matches the model's task."""
    if m.is_vision:
        return SyntheticImages(m, m.global_batch, seed, device)
    if m.family == "roberta":
        return MaskedTokens(m.vocab_size, m.seq_len, m.global_batch, seed, device, m.mask_prob)
    return SyntheticTokens(m.vocab_size, m.seq_len, m.global_batch, seed, device)
