"""pretrain-bench: honest step times, MFU and time-to-target for pre-training set-ups."""

__version__ = "0.1.0"
