"""One process on one device, no wrapper: the reference every distributed backend must match."""

from pretrain_bench.train.strategies.base import TorchStrategy

STRATEGY = TorchStrategy
