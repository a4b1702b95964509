"""The `pretrain-bench` command line: `app` parses and dispatches; each command family has its own module."""

from pretrain_bench.cli.app import main

__all__ = ["main"]
