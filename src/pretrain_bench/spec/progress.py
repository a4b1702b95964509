"""The line rank 0 prints after each optimizer step, and its parser. Workers print it into the cell's log; the
launching process reads the log as it grows and shows live progress. One format for both sides."""

from __future__ import annotations

import re

_STEP = re.compile(r"^step (?P<step>\d+)/(?P<total>\d+) \| (?P<seconds>[\d.]+) s \| loss (?P<loss>\S+) \| "
                   r"grad_norm (?P<grad_norm>\S+) \| (?P<rate>[\d,]+) (?P<unit>token|image)s/s \| "
                   r"mem (?P<mem_gib>[\d.]+) GiB$")


def step_line(step: int, total: int, seconds: float, loss: float, grad_norm: float, samples: int,
              tokens_per_sample: int, unit: str, mem_gib: float) -> str:
    """`step` counts from 1; `samples` per optimizer step (the global batch); rate in the model's unit."""
    rate = samples * tokens_per_sample / seconds if seconds > 0 else 0.0
    return (f"step {step}/{total} | {seconds:.3f} s | loss {loss:.4f} | grad_norm {grad_norm:.3f} | "
            f"{rate:,.0f} {unit}s/s | mem {mem_gib:.2f} GiB")


def parse_step(line: str) -> dict | None:
    """The fields of a step line (numbers as numbers), or None for any other line of the log."""
    found = _STEP.match(line.strip())
    if not found:
        return None
    f = found.groupdict()
    return {"step": int(f["step"]), "total": int(f["total"]), "seconds": float(f["seconds"]),
            "loss": float(f["loss"]), "grad_norm": float(f["grad_norm"]), "rate": float(f["rate"].replace(",", "")),
            "unit": f["unit"], "mem_gib": float(f["mem_gib"])}
