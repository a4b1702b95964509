"""Performance and memory model: step time, peak memory and days for a workload on any GPU layout, without torch.

`workload` describes what runs (shape, layout, strategy, tricks, micro-batch); `compute`, `comms` and `memory` cost
it; `step` adds them up into a prediction; `efficiency` holds the per-generation constants that `fit` estimates from
published measurements; `plan` ranks methods and hardware; `reference` checks predictions against published rows.
"""
