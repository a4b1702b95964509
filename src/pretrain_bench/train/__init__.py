"""What a rank runs (torch): build the model, apply strategy and tricks, the one training loop, batches, faults,
profiling, and the HF Trainer peer. Started as `python -m pretrain_bench.train.worker`; never imported by the
launching process."""
