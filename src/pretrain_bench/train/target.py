"""Time-to-target: evaluate on held-out text every `eval_every` steps inside the clock, stop at the first
evaluation at or below the target loss."""

from __future__ import annotations

import time

from pretrain_bench import config
from pretrain_bench.train import loop
from pretrain_bench.train.strategies.base import Runtime


class TargetTracker:
    """Evaluates every `eval_every` steps inside the clock and stops training at the first evaluation ≤ target."""

    def __init__(self, cfg: config.BenchConfig, model, strategy, rt: Runtime, corpus_path: str):
        from pretrain_bench.data.corpus import PackedCorpus
        from pretrain_bench.train.text_batches import val_batches

        self.cfg, self.model, self.strategy, self.rt = cfg, model, strategy, rt
        corpus = PackedCorpus.open(corpus_path)
        n = min(cfg.target.eval_sequences, corpus.n_val) // rt.world * rt.world  # equal share on every rank
        if n == 0:
            raise ValueError(f"the validation split has {corpus.n_val} sequences, fewer than the "
                             f"{rt.world} ranks; raise data.val_tokens")
        self.batches = list(val_batches(corpus, cfg.micro_batch, rt.device, max_sequences=n, rank=rt.rank,
                                        world=rt.world))
        self.n_sequences = n
        self.evals: list[dict] = []
        self.clock_start: float | None = None

    def should_evaluate(self, step: int) -> bool:
        """After optimizer step `step` (0-based): every `eval_every` steps, and after the last of the budget."""
        t = self.cfg.target
        return (step + 1) % t.eval_every == 0 or step + 1 >= t.max_steps

    def __call__(self, log: loop.StepLog) -> bool:
        """Called after every step; True when the target is reached (training stops)."""
        if self.clock_start is None:
            self.clock_start = log.started  # the clock starts with the first training step
        if not self.should_evaluate(log.step):
            return False
        loss = loop.evaluate(self.model, self.strategy, self.batches, self.rt)
        self.evals.append({"step": log.step + 1, "val_loss": loss,
                           "elapsed_s": time.perf_counter() - self.clock_start})
        if self.rt.rank == 0:
            print(f"eval after step {log.step + 1}: validation loss {loss:.4f} (target {self.cfg.target.loss})",
                  flush=True)
        return loss <= self.cfg.target.loss

    def result(self) -> dict:
        reached = bool(self.evals) and self.evals[-1]["val_loss"] <= self.cfg.target.loss
        return {"loss": self.cfg.target.loss, "reached": reached, "evals": self.evals,
                "steps": self.evals[-1]["step"] if reached else None,
                "time_s": self.evals[-1]["elapsed_s"] if reached else None,
                "final_val_loss": self.evals[-1]["val_loss"] if self.evals else None,
                "eval_every": self.cfg.target.eval_every, "max_steps": self.cfg.target.max_steps,
                "eval_sequences": self.n_sequences}
