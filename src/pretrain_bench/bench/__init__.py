"""The launching process: plan and search, run a cell in fresh `torchrun` workers, time-outs and statuses, sweeps
and their launchers, the store. No torch: it starts the processes that import it."""
