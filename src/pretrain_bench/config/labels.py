"""Canonical strategy and trick-set names, derived from the fields so that an override never leaves a stale name."""

from __future__ import annotations

from dataclasses import replace

from pretrain_bench.config.schema import StrategyConfig, TricksConfig


def strategy_label(st: StrategyConfig) -> str:
    """Canonical strategy name: `ddp`, `fsdp-grad-op`, `zero3-offload`, …"""
    if st.backend == "fsdp":
        return "fsdp" if st.reshard_after_forward else "fsdp-grad-op"
    if st.backend == "deepspeed":
        label = f"zero{st.zero_stage}"
        if st.offload_optimizer and st.offload_params:
            return label + "-offload"
        if st.offload_optimizer:
            return label + ("-offload-opt" if st.zero_stage == 3 else "-offload")
        return label + ("-offload-params" if st.offload_params else "")
    return st.backend


NAIVE = TricksConfig()
FREE_LUNCH = TricksConfig(precision="recipe", tf32=True, attention="sdpa", fused_adamw=True, compile=True)


def tricks_label(tr: TricksConfig) -> str:
    """Canonical trick-set name: `naive`, `free-lunch` or the list of what is on, then the faster methods, then `+ac`.

    E.g. `free-lunch+flce+ac/2` (fused linear-CE, every 2nd block checkpointed), `bf16+sdpa+compile+sdpa-flash`.
    """
    core = replace(tr, activation_checkpointing=False, ac_every=1, fused_linear_ce=False, attention_backend="auto",
                   compile_mode="default", fp8=False)
    if core == NAIVE:
        label = "naive"
    elif core == FREE_LUNCH:
        label = "free-lunch"
    else:
        parts = [tr.precision] if tr.precision != "fp32" else []
        parts += [tr.attention] if tr.attention != "eager" else []
        parts += [name for name, on in (("tf32", tr.tf32), ("fused-adamw", tr.fused_adamw), ("compile", tr.compile))
                  if on]
        label = "+".join(parts) or "naive"
    extras = [f"compile-{tr.compile_mode}"] if tr.compile_mode != "default" else []
    extras += [f"sdpa-{tr.attention_backend}"] if tr.attention_backend != "auto" else []
    extras += ["fp8"] if tr.fp8 else []
    extras += ["flce"] if tr.fused_linear_ce else []
    if tr.activation_checkpointing:
        extras.append("ac" if tr.ac_every == 1 else f"ac/{tr.ac_every}")
    return "+".join([label, *extras])
